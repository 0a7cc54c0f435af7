//! What the control task hears (`ControlEvent`) and says (`Outputs`), and the clocks and exit
//! slot it shares with the node's other tasks.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::geometry_msgs::msg::{Twist, TwistStamped};
use r2r::lifecycle_msgs::msg::TransitionEvent;
use r2r::lifecycle_msgs::srv::{ChangeState, GetAvailableStates, GetAvailableTransitions, GetState};
use r2r::moe_vla_msgs::action::FollowInstruction;
use r2r::moe_vla_msgs::msg::{GaitCommand, VlaDecision};
use r2r::std_srvs::srv::SetBool;
use r2r::{ActionServerCancelRequest, ActionServerGoalRequest, Clock, Publisher, QosProfile, ServiceRequest};

use crate::control::{ConfigError, ControlOutput, Now};
use crate::policy::{FrameDecision, FrameError, OwnedFrame, Policy, PolicyError};
use crate::ros::convert::{self, InstructionError};
use crate::ros::params::{NodeParams, ParamError};
use crate::topics;

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
pub(super) enum ControlEvent {
    Frame(Received),
    BadFrame(FrameError),
    Instruction(Result<String, InstructionError>),
    Enable(ServiceRequest<SetBool::Service>),
    /// The e-stop topic: true engages, false releases (which does not re-arm).
    EStop(bool),
    /// A deadman heartbeat: true = held.
    Heartbeat(bool),
    Goal(ActionServerGoalRequest<FollowInstruction::Action>),
    CancelGoal(ActionServerCancelRequest),
    FrameDecision(FrameDecision),
    /// `ros2 param set` changed parameters; this is the whole new set.
    Params(String, Box<NodeParams>),
    ChangeState(ServiceRequest<ChangeState::Service>),
    GetState(ServiceRequest<GetState::Service>),
    GetAvailableStates(ServiceRequest<GetAvailableStates::Service>),
    GetAvailableTransitions(ServiceRequest<GetAvailableTransitions::Service>),
    /// The model loaded (or failed to) on the configure thread.
    Loaded(Result<Box<Policy>, NodeError>),
    Tick,
    Diagnostics,
}

#[derive(Clone)]
pub(super) enum CmdPublisher {
    Plain(Publisher<Twist>),
    Stamped(Publisher<TwistStamped>),
}

/// The node's publishers.
#[derive(Clone)]
pub(super) struct Outputs {
    pub(super) cmd: CmdPublisher,
    /// None with `publish_gait: false`.
    pub(super) gait: Option<Publisher<GaitCommand>>,
    pub(super) decision: Publisher<VlaDecision>,
    pub(super) diagnostics: Publisher<DiagnosticArray>,
    pub(super) transition_event: Publisher<TransitionEvent>,
    pub(super) frame_id: String,
}

impl Outputs {
    pub(super) fn create(node: &mut r2r::Node, params: &NodeParams) -> Result<Self, r2r::Error> {
        let reliable = QosProfile::default().keep_last(10);
        let settings = &params.node;
        let cmd = if settings.use_stamped {
            CmdPublisher::Stamped(node.create_publisher(topics::CMD_VEL.relative, reliable.clone())?)
        } else {
            CmdPublisher::Plain(node.create_publisher(topics::CMD_VEL.relative, reliable.clone())?)
        };
        let gait = match settings.publish_gait {
            true => Some(node.create_publisher(topics::GAIT_COMMAND.relative, reliable.clone())?),
            false => None,
        };
        Ok(Self {
            cmd,
            gait,
            decision: node.create_publisher(topics::DECISION.relative, reliable.clone())?,
            diagnostics: node.create_publisher("/diagnostics", QosProfile::default())?,
            transition_event: node.create_publisher("~/transition_event", reliable)?,
            frame_id: settings.frame_id.clone(),
        })
    }

    pub(super) fn publish(&self, out: &ControlOutput, now: Duration) -> Result<(), r2r::Error> {
        let header = convert::header(now, &self.frame_id);
        match &self.cmd {
            CmdPublisher::Plain(p) => p.publish(&convert::twist(out.twist))?,
            CmdPublisher::Stamped(p) => p.publish(&convert::twist_stamped(out.twist, header.clone()))?,
        }
        if let Some(gait) = &self.gait {
            gait.publish(&convert::gait_command(&out.gait, out.stop.is_some(), header))?;
        }
        Ok(())
    }

    /// A stop in the neutral gait, for when no controller is ticking (shutdown).
    pub(super) fn stop(&self, now: Duration) -> Result<(), r2r::Error> {
        let standstill = ControlOutput { stop: Some(crate::control::StopReason::Disabled), ..ControlOutput::standstill() };
        self.publish(&standstill, now)
    }
}

/// A good camera frame, as it arrived.
pub(super) struct Received {
    /// Shared with the inference job, so the newest frame can be kept without a copy.
    pub(super) frame: Arc<OwnedFrame>,
    /// The camera's header stamp and frame_id.
    pub(super) source_stamp: Duration,
    pub(super) frame_id: String,
    /// Receipt time on the node's two clocks.
    pub(super) at: Now,
    /// Receipt time on the wall clock, for latency.
    pub(super) received: Instant,
}

/// The node's two clocks: ROS time (`/clock` with use_sim_time) and a steady clock from start-up.
#[derive(Clone)]
pub(super) struct Clocks {
    pub(super) ros: Arc<Mutex<Clock>>,
    pub(super) started: Instant,
}

impl Clocks {
    pub(super) fn ros_now(&self) -> Duration {
        self.ros.lock().map_or(Duration::ZERO, |mut c| c.get_now().unwrap_or(Duration::ZERO))
    }

    pub(super) fn now(&self) -> Now {
        Now { ros: self.ros_now().as_secs_f64(), steady: self.started.elapsed().as_secs_f64() }
    }
}

/// Set by the control task when the node must end: `Ok` after a clean stop, `Err` on a fault
/// (the model failed to load in an unmanaged start, the inference thread died).
pub(super) type Exit = Rc<RefCell<Option<Result<(), NodeError>>>>;
