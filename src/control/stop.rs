//! Why the controller commands a stop: each reason, its stable name, and which stops are idle
//! (nothing to follow) or the camera's.

use std::fmt;

/// Why the controller is commanding a stop.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// The e-stop input is engaged; releasing it leaves the robot disabled.
    EStop,
    Disabled,
    NoInstruction,
    /// The deadman heartbeat is missing (never heard, released, or older than its timeout).
    Deadman,
    NoFrame,
    /// ROS time went back (a looping bag, a simulator reset): everything before is forgotten and
    /// the robot stands until a frame arrives on the new timeline.
    ClockJumpedBack {
        by_s: f64,
    },
    StaleFrame {
        age_s: f64,
    },
    /// Frames keep arriving, but with the stamp of one already seen.
    FrozenStamps {
        age_s: f64,
    },
    /// Frames keep arriving, but stamped further from now than `max_frame_latency_s`.
    LateFrames {
        age_s: f64,
        lag_s: f64,
    },
    /// The decision being followed was made on a frame this old.
    StaleDecision {
        age_s: f64,
    },
    /// The inference thread is gone (it panicked); nothing will decide again.
    InferenceDied,
    /// The model chose terminate; held until a new instruction arrives.
    Terminated,
    /// No decision yet for the current instruction.
    Waiting,
    /// The last decision failed (bad frame, bad instruction, model error, non-finite output).
    DecisionFailed(String),
    /// The limited command was not finite (a defect upstream; never published).
    NonFinite,
}

impl StopReason {
    /// A short stable name, for counters and diagnostics keys.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EStop => "estop",
            Self::Disabled => "disabled",
            Self::NoInstruction => "no_instruction",
            Self::Deadman => "deadman",
            Self::NoFrame => "no_frame",
            Self::ClockJumpedBack { .. } => "clock_jumped_back",
            Self::StaleFrame { .. } => "stale_frame",
            Self::FrozenStamps { .. } => "frozen_stamps",
            Self::LateFrames { .. } => "late_frames",
            Self::StaleDecision { .. } => "stale_decision",
            Self::InferenceDied => "inference_died",
            Self::Terminated => "terminated",
            Self::Waiting => "waiting",
            Self::DecisionFailed(_) => "decision_failed",
            Self::NonFinite => "non_finite",
        }
    }

    /// A stop with nothing to follow: the robot is not meant to move, so after a settle time the
    /// node stops publishing and lower-priority command sources take over.
    pub fn is_idle(&self) -> bool {
        matches!(self, Self::EStop | Self::Disabled | Self::NoInstruction | Self::Terminated)
    }

    /// A stop caused by the camera input, whatever the arming.
    pub fn is_camera(&self) -> bool {
        matches!(
            self,
            Self::NoFrame
                | Self::ClockJumpedBack { .. }
                | Self::StaleFrame { .. }
                | Self::FrozenStamps { .. }
                | Self::LateFrames { .. }
        )
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EStop => write!(f, "e-stop engaged"),
            Self::Disabled => write!(f, "disabled (arm through ~/enable or the lifecycle)"),
            Self::NoInstruction => write!(f, "no instruction"),
            Self::Deadman => write!(f, "no deadman heartbeat"),
            Self::NoFrame => write!(f, "no camera frame yet"),
            Self::ClockJumpedBack { by_s } => {
                write!(f, "ROS time jumped back {by_s:.2} s; waiting for a frame on the new timeline")
            }
            Self::StaleFrame { age_s } => write!(f, "newest camera frame is {age_s:.2} s old"),
            Self::FrozenStamps { age_s } => {
                write!(f, "camera frames repeat an old header stamp; the newest new one is {age_s:.2} s old")
            }
            Self::LateFrames { age_s, lag_s } => write!(
                f,
                "camera frames arrive stamped {lag_s:.2} s from now, beyond max_frame_latency_s; the newest timely one is {age_s:.2} s old"
            ),
            Self::StaleDecision { age_s } => write!(f, "newest decision was made on a frame {age_s:.2} s old"),
            Self::InferenceDied => write!(f, "the inference thread died"),
            Self::Terminated => write!(f, "the model ended the episode; waiting for a new instruction"),
            Self::Waiting => write!(f, "waiting for the first decision"),
            Self::DecisionFailed(e) => write!(f, "decision failed: {e}"),
            Self::NonFinite => write!(f, "command was not finite"),
        }
    }
}
