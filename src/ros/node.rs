//! `moe_vla_node`: camera frames and an instruction in; cmd_vel, gait_command, ~/decision and
//! /diagnostics out. One task per input feeds a single control task that owns the `Controller`;
//! inference runs on its own thread behind a newest-frame slot. If that thread dies the node
//! publishes a stop and exits with an error.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{self, UnboundedSender};
use futures::executor::LocalPool;
use futures::executor::LocalSpawner;
use futures::future::{self, AbortHandle};
use futures::prelude::*;
use futures::task::{LocalSpawnExt, SpawnError};
use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};
use r2r::geometry_msgs::msg::{Twist, TwistStamped};
use r2r::moe_vla_msgs::action::FollowInstruction;
use r2r::moe_vla_msgs::msg::{GaitCommand, VlaDecision};
use r2r::qos::ReliabilityPolicy;
use r2r::sensor_msgs::msg::{CompressedImage, Image};
use r2r::std_srvs::srv::SetBool;
use r2r::{ActionServerCancelRequest, ActionServerGoal, ActionServerGoalRequest, Clock, Publisher, QosProfile, ServiceRequest};

use super::convert::{self, DecisionContext, InstructionError};
use super::logging::{self, Throttle};
use super::params::{ImageInput, LiveParams, NodeParams, ParamError};
use super::streams::{forward, timer_stream};
use crate::control::{Applied, ConfigError, ControlOutput, CopyFilter, Session, StopReason, Tick};
use crate::policy::tokenize::accept_instruction;
use crate::policy::{FrameDecision, FrameError, FrameJob, InferenceWorker, OwnedFrame, Policy, PolicyError};
use crate::topics;

pub const NODE_NAME: &str = "moe_vla_node";

// A build of r2r without /clock support would ignore use_sim_time silently; refuse to build.
r2r::assert_compiled_with_use_sim_time_support!();

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("ROS")]
    Ros(#[from] r2r::Error),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("cannot load model {}", dir.display())]
    Model { dir: PathBuf, source: PolicyError },
    #[error(transparent)]
    Control(#[from] ConfigError),
    #[error("cannot start a thread or signal handler")]
    Io(#[from] std::io::Error),
    #[error("cannot start a task")]
    Spawn(#[from] futures::task::SpawnError),
    #[error("the inference thread died (see the panic message above); stopped the robot and exiting")]
    InferenceDied,
}

/// Everything the control task hears about.
enum ControlEvent {
    Frame(Received),
    BadFrame(FrameError),
    Instruction(Result<String, InstructionError>),
    Enable(ServiceRequest<SetBool::Service>),
    Goal(ActionServerGoalRequest<FollowInstruction::Action>),
    CancelGoal(ActionServerCancelRequest),
    FrameDecision(FrameDecision),
    /// `ros2 param set` changed parameters; this is the whole new set.
    Params(String, Box<NodeParams>),
    Tick,
    Diagnostics,
}

#[derive(Clone)]
enum CmdPublisher {
    Plain(Publisher<Twist>),
    Stamped(Publisher<TwistStamped>),
}

/// The node's publishers.
#[derive(Clone)]
struct Outputs {
    cmd: CmdPublisher,
    gait: Publisher<GaitCommand>,
    decision: Publisher<VlaDecision>,
    diagnostics: Publisher<DiagnosticArray>,
    frame_id: String,
}

impl Outputs {
    fn create(node: &mut r2r::Node, params: &NodeParams) -> Result<Self, r2r::Error> {
        let reliable = QosProfile::default().keep_last(10);
        let cmd = if params.use_stamped {
            CmdPublisher::Stamped(node.create_publisher(topics::CMD_VEL.relative, reliable.clone())?)
        } else {
            CmdPublisher::Plain(node.create_publisher(topics::CMD_VEL.relative, reliable.clone())?)
        };
        Ok(Self {
            cmd,
            gait: node.create_publisher(topics::GAIT_COMMAND.relative, reliable.clone())?,
            decision: node.create_publisher(topics::DECISION.relative, reliable)?,
            diagnostics: node.create_publisher("/diagnostics", QosProfile::default())?,
            frame_id: params.frame_id.clone(),
        })
    }

    fn publish(&self, out: &ControlOutput, now: Duration) -> Result<(), r2r::Error> {
        let header = convert::header(now, &self.frame_id);
        match &self.cmd {
            CmdPublisher::Plain(p) => p.publish(&convert::twist(out.twist))?,
            CmdPublisher::Stamped(p) => p.publish(&convert::twist_stamped(out.twist, header.clone()))?,
        }
        self.gait.publish(&convert::gait_command(&out.gait, header))?;
        Ok(())
    }

    fn stop(&self, now: Duration) -> Result<(), r2r::Error> {
        self.publish(&ControlOutput::standstill(), now)
    }
}

/// A good camera frame, as it arrived.
struct Received {
    /// Shared with the inference job, so the newest frame can be kept without a copy.
    frame: Arc<OwnedFrame>,
    /// The camera's header stamp.
    source_stamp: Duration,
    /// Receipt time on the node's clock (ROS time).
    stamp: f64,
    /// Receipt time on the wall clock, for latency.
    received: Instant,
}

impl Received {
    /// The frame as a job for the model, to be decided for `instruction`; `asked` starts its latency.
    fn job(&self, instruction: Arc<str>, asked: Instant) -> FrameJob {
        FrameJob { frame: self.frame.clone(), instruction, source_stamp: self.source_stamp, received_at: self.stamp, asked }
    }
}

fn now(clock: &Mutex<Clock>) -> Duration {
    clock.lock().map_or(Duration::ZERO, |mut c| c.get_now().unwrap_or(Duration::ZERO))
}

/// Set by SIGINT/SIGTERM.
fn shutdown_flag() -> Result<Arc<AtomicBool>, std::io::Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(flag)
}

/// Runs the node until SIGINT or SIGTERM, then publishes a final stop.
pub fn run() -> Result<(), NodeError> {
    let shutdown = shutdown_flag()?;
    let ctx = r2r::Context::create()?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "")?;
    logging::init(node.logger());

    let (param_changes, changed_params) = mpsc::unbounded::<(String, NodeParams)>();
    let live = Arc::new(Mutex::new(LiveParams::new(NodeParams::default(), param_changes)));
    let (param_handler, _param_events) = node.make_derived_parameter_handler(live.clone())?;
    let params = live.lock().expect("not shared yet").current().clone();
    let declared: Vec<String> = NodeParams::declared().into_iter().map(|(name, _)| name).collect();
    for name in node.params.lock().expect("not shared yet").keys() {
        if !declared.contains(name) {
            tracing::warn!("ignoring unknown parameter '{name}'");
        }
    }
    let input = params.image_input()?;
    let mut session = Session::new(params.control_config(), 200)?;
    session.set_enabled(params.start_enabled);

    let model_dir = params.model_dir()?;
    let model_err = |source| NodeError::Model { dir: model_dir.clone(), source };
    let device = params.device()?;
    let mut policy = Policy::load(&model_dir, &device).map_err(model_err)?;
    if let Some(threads) = params.inference_threads()? {
        policy.set_threads(threads).map_err(model_err)?;
    }
    let model = ModelInfo {
        id: policy.model_id().to_owned(),
        names: policy.action_space().names().to_vec(),
        trained: policy.config().trained,
    };
    tracing::info!(
        "model '{}' from {} ({} parameters, {} active per token){}; on {}, {} inference threads",
        model.id,
        model_dir.display(),
        policy.params().total,
        policy.params().active_per_token,
        if model.trained { "" } else { " -- UNTRAINED: its commands are meaningless" },
        if device.is_cpu() { "the CPU".to_owned() } else { format!("{device:?}") },
        policy.threads(),
    );

    let inference_died = Arc::new(AtomicBool::new(false));
    let (events, event_stream) = mpsc::unbounded::<ControlEvent>();
    let worker = {
        let events = events.clone();
        InferenceWorker::spawn(policy, move |decided| {
            let _ = events.unbounded_send(ControlEvent::FrameDecision(decided));
        })?
    };

    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner.spawn_local(param_handler)?;
    let clock = node.get_ros_clock();
    let outputs = Outputs::create(&mut node, &params)?;

    // Camera: only the newest frame is kept; what the model has not taken yet is replaced.
    match input {
        ImageInput::Raw => {
            let frames = node.subscribe::<Image>(topics::CAMERA.relative, QosProfile::sensor_data())?;
            spawner.spawn_local(feed_frames(frames, convert::frame_from_image, clock.clone(), events.clone()))?;
        }
        ImageInput::Compressed => {
            let frames = node.subscribe::<CompressedImage>(topics::CAMERA_COMPRESSED.relative, QosProfile::sensor_data())?;
            spawner.spawn_local(feed_frames(frames, convert::frame_from_compressed, clock.clone(), events.clone()))?;
        }
    }

    // Instructions from any reliable publisher: a transient-local subscription hears the latest
    // one a latching publisher kept for late joiners, a volatile one hears default-QoS publishers
    // (`ros2 topic pub`, rqt, speech nodes). A latching publisher reaches both: the copy is dropped.
    let copies = Rc::new(RefCell::new(CopyFilter::default()));
    let latched_qos = QosProfile::default().keep_last(1).reliable().transient_local();
    let volatile_qos = QosProfile::default().keep_last(10).reliable();
    for (subscription, qos) in [latched_qos, volatile_qos].into_iter().enumerate() {
        let instructions = node.subscribe_raw(topics::INSTRUCTION.relative, "std_msgs/msg/String", qos)?;
        let copies = copies.clone();
        let first_copies = instructions.filter_map(move |cdr| {
            let first = copies.borrow_mut().first_copy(subscription, &cdr, Instant::now());
            future::ready(first.then(|| ControlEvent::Instruction(convert::instruction_from_cdr(&cdr))))
        });
        spawner.spawn_local(forward(first_copies, events.clone()))?;
    }
    let mut instruction_qos = QosCheck::new(topics::resolve(
        &std::env::args().collect::<Vec<_>>(),
        NODE_NAME,
        &node.namespace()?,
        topics::INSTRUCTION.relative,
    ));

    let enable = node.create_service::<SetBool::Service>("~/enable", QosProfile::services_default())?;
    spawner.spawn_local(forward(enable.map(ControlEvent::Enable), events.clone()))?;
    let goals = node.create_action_server::<FollowInstruction::Action>("follow_instruction")?;
    spawner.spawn_local(forward(goals.map(ControlEvent::Goal), events.clone()))?;

    let mut ticks = TickTimer::default();
    ticks.start(&mut node, &spawner, &events, session.config().period_s())?;
    spawner.spawn_local(forward(changed_params.map(|(name, p)| ControlEvent::Params(name, Box::new(p))), events.clone()))?;
    let (rate_changes, mut new_periods) = mpsc::unbounded::<f64>();
    let diagnostics = node.create_timer(Duration::from_secs(1))?;
    spawner.spawn_local(forward(timer_stream(diagnostics).map(|_| ControlEvent::Diagnostics), events.clone()))?;

    if !params.instruction.trim().is_empty() {
        // Checked like one from the topic: a parameter cannot bypass the length limit.
        let instruction = accept_instruction(&params.instruction).map(str::to_owned).map_err(InstructionError::from);
        events.unbounded_send(ControlEvent::Instruction(instruction)).expect("receiver alive");
    }
    let control = ControlTask {
        params: params.clone(),
        rate_changes,
        session,
        worker,
        outputs: outputs.clone(),
        clock: clock.clone(),
        model,
        throttle: Throttle::new(Duration::from_secs(2)),
        started: Instant::now(),
        inference_died: inference_died.clone(),
        goal: None,
        newest: None,
        spawner: spawner.clone(),
        events: events.clone(),
    };
    spawner.spawn_local(control.run(event_stream))?;
    tracing::info!(
        "ready: {} input, cmd_vel as {}, control at {:.1} Hz, image timeout {:.2} s",
        if input == ImageInput::Raw { "raw image" } else { "compressed image" },
        if params.use_stamped { "TwistStamped" } else { "Twist" },
        params.control_rate_hz,
        params.image_timeout_s,
    );

    while !shutdown.load(Ordering::Relaxed) && !inference_died.load(Ordering::Relaxed) {
        node.spin_once(Duration::from_millis(5));
        pool.run_until_stalled();
        instruction_qos.poll(&node);
        // Timers belong to the node, which this loop holds: a new control rate is applied here.
        while let Ok(period_s) = new_periods.try_recv() {
            // A timer that cannot be made leaves the old one ticking; never leave without the final stop.
            if let Err(e) = ticks.start(&mut node, &spawner, &events, period_s) {
                tracing::error!("cannot change the control rate, keeping the old one: {e}");
            }
        }
    }
    tracing::info!("shutting down: publishing a stop");
    outputs.stop(now(&clock))?;
    // Give reliable subscribers a moment to take the stop before the publishers go away.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(10));
    }
    if inference_died.load(Ordering::Relaxed) {
        return Err(NodeError::InferenceDied);
    }
    Ok(())
}

/// The control tick timer. A new control rate replaces it: r2r timers have a fixed period.
#[derive(Default)]
struct TickTimer {
    running: Option<AbortHandle>,
}

impl TickTimer {
    fn start(
        &mut self,
        node: &mut r2r::Node,
        spawner: &LocalSpawner,
        events: &UnboundedSender<ControlEvent>,
        period_s: f64,
    ) -> Result<(), NodeError> {
        let timer = node.create_timer(Duration::from_secs_f64(period_s))?;
        let (ticks, handle) = future::abortable(forward(timer_stream(timer).map(|_| ControlEvent::Tick), events.clone()));
        spawner.spawn_local(ticks.map(|_| ()))?;
        // Aborting drops the old timer, which r2r then removes from the node.
        if let Some(old) = self.running.replace(handle) {
            old.abort();
        }
        Ok(())
    }
}

/// Warns, once per publisher, about instruction publishers whose QoS the node's reliable
/// subscriptions cannot match (best effort): what they send is never heard.
struct QosCheck {
    topic: String,
    warned: Vec<Vec<u8>>,
    /// When each unwarned best-effort publisher was first seen without its node's name.
    unnamed_since: Vec<(Vec<u8>, Instant)>,
    next: Instant,
}

/// The graph can list an endpoint before its node's name arrives (rmw sends names separately,
/// on ros_discovery_info): the warning waits this long for the name before it goes out without.
const NAME_GRACE: Duration = Duration::from_secs(3);
/// What rmw reports as the node name of an endpoint whose node it does not know yet.
const UNKNOWN_NODE_NAME: &str = "_NODE_NAME_UNKNOWN_";

impl QosCheck {
    fn new(topic: String) -> Self {
        Self { topic, warned: Vec::new(), unnamed_since: Vec::new(), next: Instant::now() }
    }

    fn poll(&mut self, node: &r2r::Node) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let Ok(publishers) = node.get_publishers_info_by_topic(&self.topic, false) else {
            return;
        };
        // Forget publishers that are gone, so the lists stay as long as the graph's.
        let present: Vec<Vec<u8>> = publishers.iter().map(|p| p.endpoint_gid.to_vec()).collect();
        self.warned.retain(|g| present.contains(g));
        self.unnamed_since.retain(|(g, _)| present.contains(g));
        for p in publishers {
            let gid = p.endpoint_gid.to_vec();
            if p.qos_profile.reliability != ReliabilityPolicy::BestEffort || self.warned.contains(&gid) {
                continue;
            }
            let named = p.node_name != UNKNOWN_NODE_NAME;
            if !named {
                let since = match self.unnamed_since.iter().find(|(g, _)| *g == gid) {
                    Some((_, since)) => *since,
                    None => {
                        self.unnamed_since.push((gid.clone(), now));
                        now
                    }
                };
                if now < since + NAME_GRACE {
                    continue;
                }
            }
            self.unnamed_since.retain(|(g, _)| *g != gid);
            self.warned.push(gid);
            let publisher = if named {
                format!("{}/{}", p.node_namespace.trim_end_matches('/'), p.node_name)
            } else {
                "a node whose name is not known yet".to_owned()
            };
            tracing::warn!(
                "{publisher} publishes on {} with best-effort reliability, which this node's reliable instruction \
                 subscriptions cannot hear: its instructions are ignored (publish with reliable QoS, volatile or transient local)",
                self.topic
            );
        }
    }
}

struct ModelInfo {
    id: String,
    names: Vec<String>,
    trained: bool,
}

async fn feed_frames<M>(
    frames: impl Stream<Item = M> + Unpin,
    to_frame: fn(M) -> Result<(OwnedFrame, Duration), FrameError>,
    clock: Arc<Mutex<Clock>>,
    events: UnboundedSender<ControlEvent>,
) {
    let mut frames = frames;
    while let Some(msg) = frames.next().await {
        let received = Instant::now();
        let event = match to_frame(msg) {
            Ok((frame, source_stamp)) => {
                let stamp = now(&clock).as_secs_f64();
                ControlEvent::Frame(Received { frame: Arc::new(frame), source_stamp, stamp, received })
            }
            Err(e) => ControlEvent::BadFrame(e),
        };
        if events.unbounded_send(event).is_err() {
            return;
        }
    }
}

struct ControlTask {
    /// The parameters in force.
    params: NodeParams,
    /// New control periods (s), for the loop that owns the tick timer.
    rate_changes: UnboundedSender<f64>,
    session: Session,
    worker: InferenceWorker,
    outputs: Outputs,
    clock: Arc<Mutex<Clock>>,
    model: ModelInfo,
    throttle: Throttle,
    started: Instant,
    /// Set when the inference thread is found dead: the node stops and exits.
    inference_died: Arc<AtomicBool>,
    /// The FollowInstruction goal being followed, if the instruction came from one.
    goal: Option<ActiveGoal>,
    /// The newest good frame, decided for a new instruction when no frame waits for the model.
    newest: Option<Received>,
    /// To forward each accepted goal's cancel requests to this task.
    spawner: LocalSpawner,
    events: UnboundedSender<ControlEvent>,
}

struct ActiveGoal {
    handle: ActionServerGoal<FollowInstruction::Action>,
    instruction: Arc<str>,
    decisions: u32,
    feedback: FollowInstruction::Feedback,
}

impl ControlTask {
    async fn run(mut self, mut events: impl Stream<Item = ControlEvent> + Unpin) {
        while let Some(event) = events.next().await {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Frame(frame) => {
                // Without an instruction there is nothing to decide; the frame still feeds the
                // watchdog, and is kept for the first instruction.
                let dropped = self
                    .session
                    .instruction()
                    .cloned()
                    .is_some_and(|instruction| self.worker.submit(frame.job(instruction, frame.received)));
                self.session.frame_received(frame.stamp, frame.source_stamp, dropped);
                self.newest = Some(frame);
            }
            ControlEvent::BadFrame(e) => {
                self.session.bad_frame();
                if let Some(held) = self.throttle.allow(e.kind()) {
                    tracing::error!("dropping camera frame: {e}{}", held_note(held));
                }
            }
            ControlEvent::Instruction(Ok(text)) => {
                self.end_goal(outcome::PREEMPTED, "replaced by an instruction on the instruction topic");
                tracing::info!("new instruction: \"{}\"", preview(&text));
                self.instruct(text.into());
            }
            ControlEvent::Instruction(Err(e)) => {
                self.end_goal(outcome::PREEMPTED, "replaced by an invalid instruction on the instruction topic");
                if let Some(held) = self.throttle.allow(e.kind()) {
                    tracing::error!("rejected instruction, stopping until a valid one: {e}{}", held_note(held));
                }
                self.session.reject_instruction();
                self.tick();
            }
            ControlEvent::Enable(request) => {
                let enable = request.message.data;
                self.session.set_enabled(enable);
                tracing::info!("{} through ~/enable", if enable { "enabled" } else { "disabled" });
                let message = if enable { "enabled" } else { "disabled: stopped and holding" };
                if let Err(e) = request.respond(SetBool::Response { success: true, message: message.into() }) {
                    tracing::warn!("cannot answer ~/enable: {e}");
                }
                self.tick();
            }
            ControlEvent::Goal(request) => {
                if let Err(e) = self.goal_request(request) {
                    tracing::error!("cannot take a follow_instruction goal: {e}");
                }
            }
            ControlEvent::CancelGoal(request) => self.cancel_goal(request),
            ControlEvent::FrameDecision(decided) => self.decided(decided),
            ControlEvent::Params(name, next) => self.params_changed(&name, *next),
            ControlEvent::Tick => self.tick(),
            ControlEvent::Diagnostics => self.diagnostics(),
        }
    }

    /// Applies a parameter set through the parameter services (already checked by `LiveParams`):
    /// `name` is the one set, `next` the whole new set.
    fn params_changed(&mut self, name: &str, next: NodeParams) {
        let config = next.control_config();
        if config != *self.session.config() {
            if let Err(e) = self.session.set_config(config) {
                tracing::error!("cannot apply the changed controller parameters: {e}");
                return;
            }
            if config.control_rate_hz != self.params.control_rate_hz {
                let _ = self.rate_changes.unbounded_send(config.period_s());
            }
            tracing::info!("controller parameter {name} changed: applied from this tick on");
        }
        self.params = next;
        match name {
            // Set, not compared: setting the same value again still acts.
            "start_enabled" => {
                let enable = self.params.start_enabled;
                self.session.set_enabled(enable);
                tracing::info!("{} through the start_enabled parameter", if enable { "enabled" } else { "disabled" });
            }
            "instruction" => {
                let text = self.params.instruction.trim().to_owned();
                self.end_goal(outcome::PREEMPTED, "replaced by the instruction parameter");
                if text.is_empty() {
                    tracing::info!("instruction parameter cleared: stopping");
                    self.session.clear_instruction();
                } else {
                    tracing::info!("new instruction from the instruction parameter: \"{}\"", preview(&text));
                    self.instruct(text.into());
                }
            }
            _ => {}
        }
        self.tick();
    }

    /// A valid instruction from the topic, a goal or the parameter. It applies to the frame waiting
    /// for the model; with none waiting, the newest frame is decided for it at once if it is still
    /// within the image timeout, so the robot need not wait a camera period to react.
    fn instruct(&mut self, text: Arc<str>) {
        if !self.worker.retarget(&text) {
            let now = now(&self.clock).as_secs_f64();
            let timeout = self.session.config().image_timeout_s;
            if let Some(frame) = self.newest.as_ref().filter(|f| now - f.stamp <= timeout) {
                // Latency counts from the instruction: the frame waited for it, not for the model.
                self.worker.submit(frame.job(text.clone(), Instant::now()));
            }
        }
        self.session.instruct(text);
    }

    fn decided(&mut self, d: FrameDecision) {
        let now = now(&self.clock);
        let (applied, tick) = self.session.decided(&d.instruction, &d.result, d.frame_time, d.latency_ms, now.as_secs_f64());
        if let Some(tick) = tick {
            // The command goes out at once rather than waiting for the next tick, before the report.
            self.publish(tick, now);
        }
        match (&applied, &d.result) {
            (Applied::Stale, _) => {}
            (_, Err(e)) => {
                if let Some(held) = self.throttle.allow("failed_decision") {
                    tracing::error!("decision failed, stopping: {e}{}", held_note(held));
                }
                self.end_goal(outcome::STOPPED_BY_SAFETY, &format!("decision failed: {e}"));
            }
            (_, Ok(out)) => {
                let info = DecisionContext {
                    // The camera's stamp: which frame this decision was made on.
                    header: convert::header(d.source_stamp, &self.outputs.frame_id),
                    instruction: &d.instruction,
                    names: &self.model.names,
                    latency_ms: d.latency_ms,
                    model_id: &self.model.id,
                };
                let msg = convert::decision(out, info);
                if let Err(e) = self.outputs.decision.publish(&msg) {
                    tracing::warn!("cannot publish ~/decision: {e}");
                }
                self.goal_decision(msg, &applied);
            }
        }
    }

    /// A FollowInstruction goal: its instruction replaces the current one, as on the topic, and
    /// a goal still running is preempted.
    fn goal_request(&mut self, request: ActionServerGoalRequest<FollowInstruction::Action>) -> Result<(), GoalError> {
        let text = match accept_instruction(&request.goal.instruction) {
            Ok(text) => text.to_owned(),
            Err(e) => {
                tracing::error!("rejected follow_instruction goal: {e}");
                return Ok(request.reject()?);
            }
        };
        let (handle, cancels) = request.accept()?;
        self.end_goal(outcome::PREEMPTED, "replaced by a newer goal");
        self.spawner.spawn_local(forward(cancels.map(ControlEvent::CancelGoal), self.events.clone()))?;
        tracing::info!("new instruction from a follow_instruction goal: \"{}\"", preview(&text));
        let text: Arc<str> = text.into();
        self.instruct(text.clone());
        self.goal =
            Some(ActiveGoal { handle, instruction: text, decisions: 0, feedback: FollowInstruction::Feedback::default() });
        self.tick();
        // A goal given while disabled ends at once, saying so.
        let stop = self.session.stop().cloned();
        self.goal_stop_changed(stop.as_ref());
        Ok(())
    }

    /// Cancelling the goal being followed stops the robot, which then holds until a new instruction.
    fn cancel_goal(&mut self, request: ActionServerCancelRequest) {
        let Some(goal) = self.goal.take_if(|g| g.handle.uuid == request.uuid) else {
            request.reject();
            return;
        };
        request.accept();
        tracing::info!("follow_instruction goal cancelled: stopping");
        self.session.clear_instruction();
        self.tick();
        finish_goal(goal, outcome::CANCELLED, "cancelled by the client");
    }

    /// Feedback for a decision on the goal's instruction; terminate ends the goal.
    fn goal_decision(&mut self, decision: VlaDecision, applied: &Applied) {
        let Some(goal) = self.goal.as_mut().filter(|g| *g.instruction == *decision.instruction) else {
            return;
        };
        match applied {
            Applied::Followed | Applied::Terminated => {
                goal.decisions += 1;
                goal.feedback.decision = decision;
                if let Err(e) = goal.handle.publish_feedback(goal.feedback.clone()) {
                    tracing::warn!("cannot publish follow_instruction feedback: {e}");
                }
                if *applied == Applied::Terminated {
                    self.end_goal(outcome::TERMINATED, "the model ended the episode");
                }
            }
            Applied::Failed => self.end_goal(outcome::STOPPED_BY_SAFETY, "the model produced a non-finite command"),
            Applied::Stale => {}
        }
    }

    /// Feedback when the robot stops or moves again; stops that need an operator end the goal.
    fn goal_stop_changed(&mut self, stop: Option<&StopReason>) {
        let Some(goal) = self.goal.as_mut() else {
            return;
        };
        goal.feedback.stopped = stop.is_some();
        goal.feedback.stop_reason = stop.map_or(String::new(), ToString::to_string);
        if let Err(e) = goal.handle.publish_feedback(goal.feedback.clone()) {
            tracing::warn!("cannot publish follow_instruction feedback: {e}");
        }
        if let Some(reason @ (StopReason::Disabled | StopReason::InferenceDied | StopReason::NonFinite)) = stop {
            self.end_goal(outcome::STOPPED_BY_SAFETY, &reason.to_string());
        }
    }

    fn end_goal(&mut self, code: u8, message: &str) {
        if let Some(goal) = self.goal.take() {
            finish_goal(goal, code, message);
        }
    }

    fn tick(&mut self) {
        if !self.worker.is_alive() && !self.inference_died.load(Ordering::Relaxed) {
            tracing::error!("the inference thread died: stopping the robot and shutting down");
            self.session.inference_died();
            self.inference_died.store(true, Ordering::Relaxed);
        }
        let now = now(&self.clock);
        let tick = self.session.tick(now.as_secs_f64());
        self.publish(tick, now);
    }

    /// Publishes a tick's command; a change of stop is logged and reported to the goal.
    fn publish(&mut self, tick: Tick, now: Duration) {
        if tick.stop_changed {
            match &tick.output.stop {
                Some(reason) => tracing::info!("stopping: {reason}"),
                None => tracing::info!("following \"{}\"", self.session.instruction().map_or("", |i| preview(i))),
            }
            self.goal_stop_changed(tick.output.stop.as_ref());
        }
        if let Err(e) = self.outputs.publish(&tick.output, now) {
            tracing::error!("cannot publish commands: {e}");
        }
    }

    fn diagnostics(&mut self) {
        let stop = self.session.stop();
        let (level, message) = match stop {
            // r2r's message constants are bindgen integers; the field is a byte.
            None => (DiagnosticStatus::OK as u8, "following the instruction".to_owned()),
            Some(
                StopReason::DecisionFailed(_)
                | StopReason::NonFinite
                | StopReason::InferenceDied
                | StopReason::StaleDecision { .. },
            ) => (DiagnosticStatus::ERROR as u8, format!("stopped: {}", stop.expect("some"))),
            Some(StopReason::StaleFrame { .. } | StopReason::FrozenStamps { .. } | StopReason::NoFrame) => {
                (DiagnosticStatus::WARN as u8, format!("stopped: {}", stop.expect("some")))
            }
            Some(reason) => (DiagnosticStatus::OK as u8, format!("stopped: {reason}")),
        };
        let c = self.session.counters();
        let ms = |q| self.session.latency().quantile(q).map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let values = [
            ("model", self.model.id.clone()),
            ("trained", self.model.trained.to_string()),
            ("enabled", self.session.enabled().to_string()),
            ("instruction", self.session.instruction().map_or(String::new(), |i| preview(i).to_owned())),
            ("frames_received", c.frames.to_string()),
            ("frames_dropped", c.dropped_frames.to_string()),
            ("bad_frames", c.bad_frames.to_string()),
            ("bad_instructions", c.bad_instructions.to_string()),
            ("decisions", c.decisions.to_string()),
            ("failed_decisions", c.failed_decisions.to_string()),
            ("stale_decisions", c.stale_decisions.to_string()),
            ("commands_published", c.commands.to_string()),
            ("decision_latency_median_ms", ms(0.5)),
            ("decision_latency_p99_ms", ms(0.99)),
            ("uptime_s", format!("{:.0}", self.started.elapsed().as_secs_f64())),
        ];
        let status = DiagnosticStatus {
            level,
            name: format!("{NODE_NAME}: controller"),
            message,
            hardware_id: self.model.id.clone(),
            values: values.into_iter().map(|(key, value)| KeyValue { key: key.into(), value }).collect(),
        };
        let array = DiagnosticArray { header: convert::header(now(&self.clock), ""), status: vec![status] };
        if let Err(e) = self.outputs.diagnostics.publish(&array) {
            tracing::warn!("cannot publish /diagnostics: {e}");
        }
    }
}

/// FollowInstruction result outcomes (r2r's message constants are bindgen integers; the field is a byte).
mod outcome {
    use r2r::moe_vla_msgs::action::FollowInstruction::Result;
    pub const TERMINATED: u8 = Result::TERMINATED as u8;
    pub const CANCELLED: u8 = Result::CANCELLED as u8;
    pub const STOPPED_BY_SAFETY: u8 = Result::STOPPED_BY_SAFETY as u8;
    pub const PREEMPTED: u8 = Result::PREEMPTED as u8;
}

#[derive(Debug, thiserror::Error)]
enum GoalError {
    #[error(transparent)]
    Ros(#[from] r2r::Error),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Ends a goal: TERMINATED succeeds, CANCELLED cancels, the rest abort.
fn finish_goal(mut goal: ActiveGoal, code: u8, message: &str) {
    tracing::info!("follow_instruction goal ended: {message}");
    let result = FollowInstruction::Result { outcome: code, message: message.to_owned(), decisions: goal.decisions };
    let sent = match code {
        outcome::TERMINATED => goal.handle.succeed(result),
        outcome::CANCELLED => goal.handle.cancel(result),
        _ => goal.handle.abort(result),
    };
    if let Err(e) = sent {
        tracing::warn!("cannot send the follow_instruction result: {e}");
    }
}

fn held_note(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more like this not shown)")
    }
}

/// At most 80 characters of an instruction, for logs.
fn preview(text: &str) -> &str {
    text.char_indices().nth(80).map_or(text, |(i, _)| &text[..i])
}
