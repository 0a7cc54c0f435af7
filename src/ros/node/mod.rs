//! `moe_vla_node`: camera frames, an instruction, an e-stop and a deadman in; cmd_vel,
//! gait_command, ~/decision and /diagnostics out; a managed (lifecycle) node. One task per input
//! feeds a single control task (`task.rs`) that owns the control `Session`; inference runs on its
//! own thread behind a newest-frame slot. The model loads on a thread of its own during the
//! configure transition, so the parameter and lifecycle services answer meanwhile.

mod diagnostics;
mod goal;
mod io;
mod task;

pub use io::NodeError;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{self, UnboundedSender};
use futures::executor::{LocalPool, LocalSpawner};
use futures::future::{self, AbortHandle};
use futures::prelude::*;
use futures::task::LocalSpawnExt;
use r2r::lifecycle_msgs::srv::{ChangeState, GetAvailableStates, GetAvailableTransitions, GetState};
use r2r::moe_vla_msgs::action::FollowInstruction;
use r2r::sensor_msgs::msg::{CompressedImage, Image};
use r2r::std_srvs::srv::SetBool;
use r2r::QosProfile;

use super::convert::{self, CameraFrame, InstructionError};
use super::logging::{self, Throttle};
use super::params::{ImageInput, LiveParams, NodeParams};
use super::qos_check::QosCheck;
use super::streams::{forward, timer_stream};
use crate::control::{CopyFilter, Session};
use crate::policy::tokenize::accept_instruction;
use crate::policy::FrameError;
use crate::topics;
use io::{Clocks, ControlEvent, Exit, Outputs, Received};
use task::ControlTask;

pub const NODE_NAME: &str = "moe_vla_node";

/// Topics of the safety inputs, relative to the node's namespace.
const ESTOP_TOPIC: &str = "estop";
const DEADMAN_TOPIC: &str = "deadman";

// A build of r2r without /clock support would ignore use_sim_time silently; refuse to build.
r2r::assert_compiled_with_use_sim_time_support!();

/// Set by SIGINT/SIGTERM.
fn shutdown_flag() -> Result<Arc<AtomicBool>, std::io::Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(flag)
}

/// Runs the node until SIGINT or SIGTERM (or a fault), then publishes a final stop.
pub fn run() -> Result<(), NodeError> {
    let shutdown = shutdown_flag()?;
    let ctx = r2r::Context::create()?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "")?;
    logging::init(node.logger());

    let (param_changes, changed_params) = mpsc::unbounded::<(String, NodeParams)>();
    let live = Arc::new(Mutex::new(LiveParams::new(NodeParams::default(), param_changes)));
    let (param_handler, _param_events) = node.make_derived_parameter_handler(live.clone())?;
    let params = live.lock().expect("not shared yet").current().clone();
    let declared: Vec<String> = NodeParams::declared().into_iter().map(|p| p.name).collect();
    for name in node.params.lock().expect("not shared yet").keys() {
        if !declared.contains(name) {
            tracing::warn!("ignoring unknown parameter '{name}'");
        }
    }
    // Parameters that would only fail at configure are checked now, so a typo ends the node at once.
    let input = params.image_input()?;
    params.model_dir()?;
    params.device()?;
    params.inference_threads()?;
    let session = Session::new(params.control_config(), 200)?;

    let (events, event_stream) = mpsc::unbounded::<ControlEvent>();
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    spawner.spawn_local(param_handler)?;
    let clocks = Clocks { ros: node.get_ros_clock(), started: Instant::now() };
    let outputs = Outputs::create(&mut node, &params)?;
    subscribe_inputs(&mut node, &spawner, &events, &clocks, input)?;
    serve(&mut node, &spawner, &events)?;
    let mut instruction_qos = QosCheck::new(topics::resolve(
        &std::env::args().collect::<Vec<_>>(),
        NODE_NAME,
        &node.namespace()?,
        topics::INSTRUCTION.relative,
    ));

    // Ticks and diagnostics run on the steady clock: a frozen or rewound /clock must not silence
    // the watchdogs.
    let mut ticks = TickTimer::default();
    ticks.start(&mut node, &spawner, &events, session.config().period_s())?;
    spawner.spawn_local(forward(changed_params.map(|(name, p)| ControlEvent::Params(name, Box::new(p))), events.clone()))?;
    let (rate_changes, mut new_periods) = mpsc::unbounded::<f64>();
    let diagnostics = node.create_wall_timer(Duration::from_secs(1))?;
    spawner.spawn_local(forward(timer_stream(diagnostics).map(|_| ControlEvent::Diagnostics), events.clone()))?;

    if !params.node.instruction.trim().is_empty() {
        // Checked like one from the topic: a parameter cannot bypass the length limit.
        let instruction = accept_instruction(&params.node.instruction).map(str::to_owned).map_err(InstructionError::from);
        events.unbounded_send(ControlEvent::Instruction(instruction)).expect("receiver alive");
    }
    let exit: Exit = Rc::new(RefCell::new(None));
    let fully_qualified = format!("{}/{NODE_NAME}", node.namespace()?.trim_end_matches('/'));
    let control = ControlTask::new(task::Setup {
        params: params.clone(),
        rate_changes,
        session,
        outputs: outputs.clone(),
        clocks: clocks.clone(),
        throttle: Throttle::new(Duration::from_secs(2)),
        exit: exit.clone(),
        spawner: spawner.clone(),
        events: events.clone(),
        name: fully_qualified,
    });
    spawner.spawn_local(control.run(event_stream))?;
    tracing::info!(
        "ready: {} input, cmd_vel as {}, control at {:.1} Hz, image timeout {:.2} s; {}",
        if input == ImageInput::Raw { "raw image" } else { "compressed image" },
        if params.node.use_stamped { "TwistStamped" } else { "Twist" },
        params.control.control_rate_hz,
        params.control.image_timeout_s,
        if params.node.managed {
            "managed: waiting for a lifecycle manager to configure and activate"
        } else if params.node.start_enabled {
            "configuring, then ARMED (start_enabled)"
        } else {
            "configuring; disarmed until ~/enable"
        },
    );

    while !shutdown.load(Ordering::Relaxed) && exit.borrow().is_none() {
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
    outputs.stop(clocks.ros_now())?;
    // Give reliable subscribers a moment to take the stop before the publishers go away.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(10));
    }
    let result = exit.borrow_mut().take();
    result.unwrap_or(Ok(()))
}

/// Camera, instruction, e-stop and deadman subscriptions, each a task feeding the control task.
fn subscribe_inputs(
    node: &mut r2r::Node,
    spawner: &LocalSpawner,
    events: &UnboundedSender<ControlEvent>,
    clocks: &Clocks,
    input: ImageInput,
) -> Result<(), NodeError> {
    // Camera: only the newest frame is kept; what the model has not taken yet is replaced.
    match input {
        ImageInput::Raw => {
            let frames = node.subscribe::<Image>(topics::CAMERA.relative, QosProfile::sensor_data())?;
            spawner.spawn_local(feed_frames(frames, convert::frame_from_image, clocks.clone(), events.clone()))?;
        }
        ImageInput::Compressed => {
            let frames = node.subscribe::<CompressedImage>(topics::CAMERA_COMPRESSED.relative, QosProfile::sensor_data())?;
            spawner.spawn_local(feed_frames(frames, convert::frame_from_compressed, clocks.clone(), events.clone()))?;
        }
    }

    // Instructions and the e-stop from any reliable publisher: a transient-local subscription
    // hears the latest message a latching publisher kept for late joiners, a volatile one hears
    // default-QoS publishers (`ros2 topic pub`, rqt, speech nodes). A latching publisher reaches
    // both: the copy of an instruction is dropped (an e-stop heard twice is the same e-stop).
    let copies = Rc::new(RefCell::new(CopyFilter::default()));
    let latched_qos = QosProfile::default().keep_last(1).reliable().transient_local();
    let volatile_qos = QosProfile::default().keep_last(10).reliable();
    for (subscription, qos) in [latched_qos.clone(), volatile_qos.clone()].into_iter().enumerate() {
        let instructions = node.subscribe_raw(topics::INSTRUCTION.relative, "std_msgs/msg/String", qos)?;
        let copies = copies.clone();
        let first_copies = instructions.filter_map(move |cdr| {
            let first = copies.borrow_mut().first_copy(subscription, &cdr, Instant::now());
            future::ready(first.then(|| ControlEvent::Instruction(convert::instruction_from_cdr(&cdr))))
        });
        spawner.spawn_local(forward(first_copies, events.clone()))?;
    }
    for qos in [latched_qos, volatile_qos] {
        let estop = node.subscribe::<r2r::std_msgs::msg::Bool>(ESTOP_TOPIC, qos)?;
        spawner.spawn_local(forward(estop.map(|m| ControlEvent::EStop(m.data)), events.clone()))?;
    }
    // Best effort hears both kinds of heartbeat publisher; a lost heartbeat is what the timeout is for.
    let deadman = node.subscribe::<r2r::std_msgs::msg::Bool>(DEADMAN_TOPIC, QosProfile::sensor_data())?;
    spawner.spawn_local(forward(deadman.map(|m| ControlEvent::Heartbeat(m.data)), events.clone()))?;
    Ok(())
}

/// ~/enable, the follow_instruction action and the lifecycle services.
fn serve(node: &mut r2r::Node, spawner: &LocalSpawner, events: &UnboundedSender<ControlEvent>) -> Result<(), NodeError> {
    let services = QosProfile::services_default();
    let enable = node.create_service::<SetBool::Service>("~/enable", services.clone())?;
    spawner.spawn_local(forward(enable.map(ControlEvent::Enable), events.clone()))?;
    let goals = node.create_action_server::<FollowInstruction::Action>("follow_instruction")?;
    spawner.spawn_local(forward(goals.map(ControlEvent::Goal), events.clone()))?;

    let change = node.create_service::<ChangeState::Service>("~/change_state", services.clone())?;
    spawner.spawn_local(forward(change.map(ControlEvent::ChangeState), events.clone()))?;
    let get = node.create_service::<GetState::Service>("~/get_state", services.clone())?;
    spawner.spawn_local(forward(get.map(ControlEvent::GetState), events.clone()))?;
    let states = node.create_service::<GetAvailableStates::Service>("~/get_available_states", services.clone())?;
    spawner.spawn_local(forward(states.map(ControlEvent::GetAvailableStates), events.clone()))?;
    let transitions = node.create_service::<GetAvailableTransitions::Service>("~/get_available_transitions", services)?;
    spawner.spawn_local(forward(transitions.map(ControlEvent::GetAvailableTransitions), events.clone()))?;
    Ok(())
}

/// The control tick timer, on the steady clock. A new control rate replaces it: r2r timers have
/// a fixed period.
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
        let timer = node.create_wall_timer(Duration::from_secs_f64(period_s))?;
        let (ticks, handle) = future::abortable(forward(timer_stream(timer).map(|_| ControlEvent::Tick), events.clone()));
        spawner.spawn_local(ticks.map(|_| ()))?;
        // Aborting drops the old timer, which r2r then removes from the node.
        if let Some(old) = self.running.replace(handle) {
            old.abort();
        }
        Ok(())
    }
}

async fn feed_frames<M>(
    frames: impl Stream<Item = M> + Unpin,
    to_frame: fn(M) -> Result<CameraFrame, FrameError>,
    clocks: Clocks,
    events: UnboundedSender<ControlEvent>,
) {
    let mut frames = frames;
    while let Some(msg) = frames.next().await {
        let received = Instant::now();
        let event = match to_frame(msg) {
            Ok(c) => ControlEvent::Frame(Received {
                frame: Arc::new(c.frame),
                source_stamp: c.stamp,
                frame_id: c.frame_id,
                at: clocks.now(),
                received,
            }),
            Err(e) => ControlEvent::BadFrame(e),
        };
        if events.unbounded_send(event).is_err() {
            return;
        }
    }
}
