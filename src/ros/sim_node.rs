//! `moe_vla_sim_node`: the task world as a ROS 2 node. It publishes the robot's camera and the
//! episode's instruction, consumes cmd_vel, gait_command and the policy's decisions (for the
//! terminate action), steps the world at its control rate and reports each episode's outcome, so
//! `moe_vla_node` runs closed-loop over ROS exactly as it would on a robot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::executor::LocalPool;
use futures::prelude::*;
use futures::task::LocalSpawnExt;
use r2r::geometry_msgs::msg::Twist;
use r2r::moe_vla_msgs::msg::{EpisodeOutcome, GaitCommand, VlaDecision};
use r2r::sensor_msgs::msg::Image;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::{Clock, Publisher, QosProfile, RosParams};
use rand::SeedableRng;

use super::convert;
use super::logging;
use super::params::{declared_parameters, Declared};
use super::streams::{forward, timer_stream};
use crate::action::{GaitFields, PlanarTwist};
use crate::sim::{
    episode_seed, new_world, sample_task, Outcome, SimError, TaskFamily, TaskWorld, WorldCommand, WorldKind, CONTROL_RATE_HZ,
};
use crate::topics;

pub const SIM_NODE_NAME: &str = "moe_vla_sim_node";

/// Every parameter `moe_vla_sim_node` declares, with its default.
#[derive(RosParams, Debug, Clone)]
pub struct SimParams {
    /// Task family of every episode (go_to, distinguish, go_avoid, go_through, crawl, stop), or "all" to cycle through them.
    pub family: String,
    /// Episodes to run before exiting; 0 = run until stopped.
    pub episodes: i64,
    /// Seed of the first episode's scenario; episode i uses a seed derived from (seed, i).
    pub seed: i64,
    /// Use held-out instruction paraphrases (never seen in training).
    pub held_out: bool,
    /// The world that plays the episodes: kinematic, or physics (a Go2 in MuJoCo; needs a build with the cargo feature `physics`).
    pub world: String,
    /// Side of the square rgb8 camera image (pixels).
    pub image_size: i64,
    /// World steps per second of wall-clock time; each step is 0.2 s of world time (5 = real time).
    pub rate_hz: f64,
    /// Wait this long (s) for a subscriber to the camera before starting anyway.
    pub wait_for_subscriber_s: f64,
    /// Pause between episodes (s), so the policy sees the new instruction before the first frame.
    pub pause_s: f64,
    /// header.frame_id of the camera images.
    pub frame_id: String,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            family: "all".into(),
            episodes: 6,
            seed: 0,
            held_out: false,
            world: WorldKind::Kinematic.name().into(),
            image_size: 64,
            rate_hz: CONTROL_RATE_HZ,
            wait_for_subscriber_s: 30.0,
            pause_s: 0.5,
            frame_id: "camera".into(),
        }
    }
}

impl SimParams {
    /// The declared parameters with their defaults.
    pub fn declared() -> Vec<Declared> {
        declared_parameters::<Self>()
    }

    fn families(&self) -> Result<Vec<TaskFamily>, SimNodeError> {
        if self.family == "all" {
            return Ok(TaskFamily::ALL.to_vec());
        }
        TaskFamily::ALL
            .iter()
            .find(|f| f.name() == self.family)
            .map(|f| vec![*f])
            .ok_or_else(|| SimNodeError::Param(format!("family '{}' is not a task family or \"all\"", self.family)))
    }

    fn world(&self) -> Result<WorldKind, SimNodeError> {
        <WorldKind as clap::ValueEnum>::from_str(&self.world, false)
            .map_err(|_| SimNodeError::Param(format!("world '{}' is not kinematic or physics", self.world)))
    }

    fn check(&self) -> Result<(), SimNodeError> {
        let bad = |m: String| Err(SimNodeError::Param(m));
        if !self.world()?.available() {
            return bad(format!(
                "world '{}': this moe_vla_sim_node was built without it (cargo feature `physics`; scripts/setup.sh builds it in)",
                self.world
            ));
        }
        if self.episodes < 0 {
            return bad(format!("episodes must be >= 0, got {}", self.episodes));
        }
        if !(1..=4096).contains(&self.image_size) {
            return bad(format!("image_size must be in 1..=4096, got {}", self.image_size));
        }
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0) {
            return bad(format!("rate_hz must be positive, got {}", self.rate_hz));
        }
        if !(self.wait_for_subscriber_s >= 0.0 && self.pause_s >= 0.0) {
            return bad("wait_for_subscriber_s and pause_s must not be negative".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimNodeError {
    #[error("ROS")]
    Ros(#[from] r2r::Error),
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("cannot start a signal handler")]
    Io(#[from] std::io::Error),
    #[error("cannot start a task")]
    Spawn(#[from] futures::task::SpawnError),
}

enum SimEvent {
    Twist(Twist),
    Gait(GaitCommand),
    Decision(VlaDecision),
    Tick,
}

/// The world's publishers.
struct Outputs {
    camera: Publisher<Image>,
    instruction: Publisher<StringMsg>,
    outcome: Publisher<EpisodeOutcome>,
    clock: Arc<Mutex<Clock>>,
    frame_id: String,
}

impl Outputs {
    fn now(&self) -> Duration {
        self.clock.lock().map_or(Duration::ZERO, |mut c| c.get_now().unwrap_or(Duration::ZERO))
    }

    fn camera(&self, world: &mut dyn TaskWorld, size: u32) -> Result<(), SimNodeError> {
        let mut pixels = Vec::new();
        world.render(size, &mut pixels)?;
        Ok(self.camera.publish(&Image {
            header: convert::header(self.now(), &self.frame_id),
            height: size,
            width: size,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: size * 3,
            data: pixels,
        })?)
    }
}

/// One episode in progress, and the newest command for it.
struct Running {
    index: u64,
    seed: u64,
    world: Box<dyn TaskWorld>,
    twist: PlanarTwist,
    gait: Option<GaitFields>,
    terminate: bool,
    /// The first frame went out (one tick after the instruction, so the policy has it).
    started: bool,
}

struct WorldTask {
    params: SimParams,
    families: Vec<TaskFamily>,
    outputs: Outputs,
    running: Option<Running>,
    next_index: u64,
    /// No episode starts before this (a pause after the previous one).
    resume_at: Instant,
    successes: u64,
    done: Arc<AtomicBool>,
}

impl WorldTask {
    async fn run(mut self, mut events: impl Stream<Item = SimEvent> + Unpin) {
        while let Some(event) = events.next().await {
            if let Err(e) = self.handle(event) {
                tracing::error!("{e}");
            }
            if self.done.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    fn handle(&mut self, event: SimEvent) -> Result<(), SimNodeError> {
        match event {
            // Commands count for the running episode only; a stale one from before it is dropped
            // when the episode starts.
            SimEvent::Twist(t) => {
                if let Some(run) = &mut self.running {
                    run.twist = PlanarTwist { x_vel: t.linear.x as f32, y_vel: t.linear.y as f32, yaw_vel: t.angular.z as f32 };
                }
            }
            SimEvent::Gait(g) => {
                if let Some(run) = &mut self.running {
                    run.gait = Some(GaitFields {
                        body_height: g.body_height,
                        step_frequency: g.step_frequency,
                        phase_offsets: [g.phase_offsets[0], g.phase_offsets[1], g.phase_offsets[2]],
                        footswing_height: g.footswing_height,
                        pitch: g.pitch,
                        stance_width: g.stance_width,
                    });
                }
            }
            SimEvent::Decision(d) => {
                if let Some(run) = &mut self.running {
                    run.terminate |= d.terminate && d.instruction == run.world.scenario().instruction;
                }
            }
            SimEvent::Tick => self.tick()?,
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SimNodeError> {
        let size = self.params.image_size as u32;
        let Some(run) = &mut self.running else {
            if Instant::now() >= self.resume_at {
                self.start_episode()?;
            }
            return Ok(());
        };
        if !run.started {
            run.started = true;
            return self.outputs.camera(run.world.as_mut(), size);
        }
        let command = if run.terminate {
            WorldCommand::Terminate
        } else {
            match run.gait {
                Some(gait) => WorldCommand::Move { twist: run.twist, gait },
                None => WorldCommand::Stand,
            }
        };
        match run.world.step(&command) {
            Some(outcome) => self.finish_episode(outcome)?,
            None => self.outputs.camera(run.world.as_mut(), size)?,
        }
        Ok(())
    }

    fn start_episode(&mut self) -> Result<(), SimNodeError> {
        let index = self.next_index;
        self.next_index += 1;
        let family = self.families[(index % self.families.len() as u64) as usize];
        let seed = episode_seed(self.params.seed as u64, index);
        let scenario = sample_task(family, self.params.held_out, &mut rand::rngs::StdRng::seed_from_u64(seed))?;
        tracing::info!("episode {index} ({}): \"{}\"", family.name(), scenario.instruction);
        self.outputs.instruction.publish(&StringMsg { data: scenario.instruction.clone() })?;
        let world = new_world(self.params.world()?, scenario)?;
        self.running =
            Some(Running { index, seed, world, twist: PlanarTwist::default(), gait: None, terminate: false, started: false });
        Ok(())
    }

    fn finish_episode(&mut self, outcome: Outcome) -> Result<(), SimNodeError> {
        let run = self.running.take().expect("called with an episode running");
        let scenario = run.world.scenario();
        self.successes += u64::from(outcome.success);
        tracing::info!(
            "episode {} ({}): {} ({}) after {} steps, {:.1} s -- {}/{} successful so far",
            run.index,
            scenario.family.name(),
            if outcome.success { "SUCCESS" } else { "FAILURE" },
            outcome.reason.name(),
            outcome.steps,
            outcome.time_s,
            self.successes,
            run.index + 1,
        );
        self.outputs.outcome.publish(&EpisodeOutcome {
            header: convert::header(self.outputs.now(), &self.outputs.frame_id),
            family: scenario.family.name().into(),
            instruction: scenario.instruction.clone(),
            success: outcome.success,
            reason: outcome.reason.name().into(),
            terminated: outcome.terminated,
            steps: outcome.steps,
            seed: run.seed,
            held_out: scenario.held_out,
        })?;
        self.resume_at = Instant::now() + Duration::from_secs_f64(self.params.pause_s);
        if self.params.episodes > 0 && self.next_index >= self.params.episodes as u64 {
            tracing::info!("{} of {} episodes successful", self.successes, self.next_index);
            self.done.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Outcomes a late subscriber still receives if it asks for transient local durability: a logger
/// started after the world, or one whose discovery finishes after a short first episode ended.
const OUTCOME_HISTORY: usize = 100;

/// Runs the world until its episodes are done (exit 0) or SIGINT/SIGTERM.
pub fn run() -> Result<(), SimNodeError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    let ctx = r2r::Context::create()?;
    let mut node = r2r::Node::create(ctx, SIM_NODE_NAME, "")?;
    logging::init(node.logger());
    let params = Arc::new(Mutex::new(SimParams::default()));
    let (param_handler, _param_events) = node.make_derived_parameter_handler(params.clone())?;
    let params = params.lock().expect("not shared yet").clone();
    params.check()?;
    let families = params.families()?;

    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner.spawn_local(param_handler)?;
    let reliable = QosProfile::default().keep_last(10);
    let outputs = Outputs {
        camera: node.create_publisher(topics::CAMERA.relative, QosProfile::sensor_data())?,
        instruction: node
            .create_publisher(topics::INSTRUCTION.relative, QosProfile::default().keep_last(1).reliable().transient_local())?,
        outcome: node
            .create_publisher("moe_vla/episode", QosProfile::default().keep_last(OUTCOME_HISTORY).reliable().transient_local())?,
        clock: node.get_ros_clock(),
        frame_id: params.frame_id.clone(),
    };
    let (events, event_stream) = mpsc::unbounded::<SimEvent>();
    let twists = node.subscribe::<Twist>(topics::CMD_VEL.relative, reliable.clone())?;
    spawner.spawn_local(forward(twists.map(SimEvent::Twist), events.clone()))?;
    let gaits = node.subscribe::<GaitCommand>(topics::GAIT_COMMAND.relative, reliable.clone())?;
    spawner.spawn_local(forward(gaits.map(SimEvent::Gait), events.clone()))?;
    let decisions = node.subscribe::<VlaDecision>("moe_vla_node/decision", reliable)?;
    spawner.spawn_local(forward(decisions.map(SimEvent::Decision), events.clone()))?;

    // Start only once the policy listens: a frame published into the void is a lost step.
    let waited = Instant::now();
    while outputs.camera.get_inter_process_subscription_count()? == 0
        && waited.elapsed().as_secs_f64() < params.wait_for_subscriber_s
        && !shutdown.load(Ordering::Relaxed)
    {
        node.spin_once(Duration::from_millis(20));
    }
    if outputs.camera.get_inter_process_subscription_count()? == 0 {
        tracing::warn!("nobody subscribes to the camera after {:.0} s; starting anyway", params.wait_for_subscriber_s);
    }

    let ticks = node.create_timer(Duration::from_secs_f64(1.0 / params.rate_hz))?;
    spawner.spawn_local(forward(timer_stream(ticks).map(|_| SimEvent::Tick), events.clone()))?;
    let done = Arc::new(AtomicBool::new(false));
    tracing::info!(
        "task world ({}): {} episodes of {}, seed {}, {} instructions, {}x{} camera at {:.1} Hz",
        params.world,
        if params.episodes == 0 { "unlimited".to_string() } else { params.episodes.to_string() },
        params.family,
        params.seed,
        if params.held_out { "held-out" } else { "seen" },
        params.image_size,
        params.image_size,
        params.rate_hz,
    );
    let task = WorldTask {
        params,
        families,
        outputs,
        running: None,
        next_index: 0,
        resume_at: Instant::now(),
        successes: 0,
        done: done.clone(),
    };
    spawner.spawn_local(task.run(event_stream))?;
    while !shutdown.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
        node.spin_once(Duration::from_millis(5));
        pool.run_until_stalled();
    }
    // Let reliable subscribers take the last outcome before the publishers go away.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(10));
    }
    Ok(())
}
