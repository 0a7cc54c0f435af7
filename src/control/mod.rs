//! The controller between decisions and the robot: which command goes out at each control tick,
//! and every safety rule on the way (watchdog, enable, terminate hold, velocity and acceleration
//! limits, non-finite guard). Time is an argument, never read from a clock, so the live node,
//! bag replay and the simulator drive the same code with their own clocks.

mod stats;
mod worker;

use std::fmt;
use std::sync::Arc;

use crate::action::{ActionCommand, GaitFields, PlanarTwist};
use crate::policy::{PolicyError, PolicyOutput};
pub use stats::LatencyStats;
pub use worker::{Decided, FrameJob, InferenceWorker};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid controller setting {name} = {value}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: f64,
    pub reason: &'static str,
}

/// Allowed range of one velocity axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisLimit {
    pub min: f32,
    pub max: f32,
    /// Largest change per second (m/s^2 or rad/s^2).
    pub max_accel: f32,
}

impl AxisLimit {
    pub fn symmetric(max: f32, max_accel: f32) -> Self {
        Self { min: -max, max, max_accel }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlConfig {
    /// Commands go out at this rate.
    pub control_rate_hz: f64,
    /// Stop when the newest frame is older than this.
    pub image_timeout_s: f64,
    pub x_vel: AxisLimit,
    pub y_vel: AxisLimit,
    pub yaw_vel: AxisLimit,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            control_rate_hz: 10.0,
            image_timeout_s: 0.5,
            x_vel: AxisLimit { min: -0.5, max: 1.0, max_accel: 1.0 },
            y_vel: AxisLimit::symmetric(0.5, 1.0),
            yaw_vel: AxisLimit::symmetric(1.0, 2.0),
        }
    }
}

impl ControlConfig {
    pub fn period_s(&self) -> f64 {
        1.0 / self.control_rate_hz
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |name, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(ConfigError { name, value, reason: "must be a positive number" })
            }
        };
        positive("control_rate_hz", self.control_rate_hz)?;
        positive("image_timeout_s", self.image_timeout_s)?;
        for (name, axis) in [("x_vel", self.x_vel), ("y_vel", self.y_vel), ("yaw_vel", self.yaw_vel)] {
            for (value, bound) in [(axis.min, "min"), (axis.max, "max")] {
                if !value.is_finite() || (bound == "min" && value > 0.0) || (bound == "max" && value < 0.0) {
                    return Err(ConfigError {
                        name,
                        value: value as f64,
                        reason: "the range must be finite and contain zero (min <= 0 <= max)",
                    });
                }
            }
            positive(name, axis.max_accel as f64)?;
        }
        Ok(())
    }
}

/// Why the controller is commanding a stop.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    Disabled,
    NoInstruction,
    NoFrame,
    StaleFrame { age_s: f64 },
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
            Self::Disabled => "disabled",
            Self::NoInstruction => "no_instruction",
            Self::NoFrame => "no_frame",
            Self::StaleFrame { .. } => "stale_frame",
            Self::Terminated => "terminated",
            Self::Waiting => "waiting",
            Self::DecisionFailed(_) => "decision_failed",
            Self::NonFinite => "non_finite",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => write!(f, "disabled through ~/enable"),
            Self::NoInstruction => write!(f, "no instruction"),
            Self::NoFrame => write!(f, "no camera frame yet"),
            Self::StaleFrame { age_s } => write!(f, "newest camera frame is {age_s:.2} s old"),
            Self::Terminated => write!(f, "the model ended the episode; waiting for a new instruction"),
            Self::Waiting => write!(f, "waiting for the first decision"),
            Self::DecisionFailed(e) => write!(f, "decision failed: {e}"),
            Self::NonFinite => write!(f, "command was not finite"),
        }
    }
}

/// What goes out at one control tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlOutput {
    /// Limited and finite; zero when stopped.
    pub twist: PlanarTwist,
    /// The gait of the decision being followed; `None` while stopped.
    pub gait: Option<GaitFields>,
    pub stop: Option<StopReason>,
}

/// What a decision did to the controller, for logging and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Now followed.
    Followed,
    /// Made for an instruction that has since changed: ignored.
    Stale,
    /// The model chose to terminate: stopping until a new instruction.
    Terminated,
    /// The decision failed: stopping until a good one.
    Failed,
}

pub struct Controller {
    config: ControlConfig,
    enabled: bool,
    instruction: Option<Arc<str>>,
    /// Receipt time of the newest good frame.
    last_frame: Option<f64>,
    target: Option<ActionCommand>,
    terminated: bool,
    failure: Option<String>,
    /// Last twist sent, the start point of acceleration limiting.
    sent: PlanarTwist,
    last_tick: Option<f64>,
}

impl Controller {
    pub fn new(config: ControlConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            enabled: true,
            instruction: None,
            last_frame: None,
            target: None,
            terminated: false,
            failure: None,
            sent: PlanarTwist::default(),
            last_tick: None,
        })
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    pub fn instruction(&self) -> Option<&Arc<str>> {
        self.instruction.as_ref()
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A new instruction (even the same text again) starts over: it releases a terminate hold and
    /// the robot waits for the first decision made for it. `None` clears the instruction.
    pub fn set_instruction(&mut self, instruction: Option<Arc<str>>) {
        self.instruction = instruction;
        self.target = None;
        self.terminated = false;
        self.failure = None;
    }

    /// Disabling stops and holds; enabling waits for the next decision rather than resuming an old one.
    pub fn set_enabled(&mut self, enabled: bool) {
        if enabled && !self.enabled {
            self.target = None;
        }
        self.enabled = enabled;
    }

    /// A good frame arrived at `now` (seconds on the controller's clock).
    pub fn frame_received(&mut self, now: f64) {
        self.last_frame = Some(self.last_frame.map_or(now, |t| t.max(now)));
    }

    /// Takes a decision from the policy.
    pub fn apply(&mut self, instruction: &str, result: &Result<PolicyOutput, PolicyError>) -> Applied {
        if self.instruction.as_deref() != Some(instruction) || self.terminated {
            return Applied::Stale;
        }
        match result {
            Ok(out) if !out.command.is_finite() => {
                self.fail("the model produced a non-finite command".into());
                Applied::Failed
            }
            Ok(out) if out.command.terminate => {
                self.terminated = true;
                self.target = None;
                Applied::Terminated
            }
            Ok(out) => {
                self.failure = None;
                self.target = Some(out.command.clone());
                Applied::Followed
            }
            Err(e) => {
                self.fail(e.to_string());
                Applied::Failed
            }
        }
    }

    fn fail(&mut self, reason: String) {
        self.target = None;
        self.failure = Some(reason);
    }

    /// Why the robot must stand still at `now`, if it must.
    pub fn stop_reason(&self, now: f64) -> Option<StopReason> {
        if !self.enabled {
            return Some(StopReason::Disabled);
        }
        if self.instruction.is_none() {
            return Some(StopReason::NoInstruction);
        }
        if self.terminated {
            return Some(StopReason::Terminated);
        }
        let Some(frame) = self.last_frame else {
            return Some(StopReason::NoFrame);
        };
        let age_s = now - frame;
        if age_s > self.config.image_timeout_s {
            return Some(StopReason::StaleFrame { age_s });
        }
        if let Some(reason) = &self.failure {
            return Some(StopReason::DecisionFailed(reason.clone()));
        }
        if self.target.is_none() {
            return Some(StopReason::Waiting);
        }
        None
    }

    /// The command for the control tick at `now`. Stops are immediate; moving commands are clamped
    /// to the velocity limits and approach the decision's twist at the acceleration limits.
    pub fn tick(&mut self, now: f64) -> ControlOutput {
        let period = self.config.period_s();
        // A clock that jumped backwards (a looping bag) gets one nominal period; a long pause at
        // most two, so a late tick cannot leap.
        let dt = match self.last_tick {
            Some(last) if now >= last => (now - last).min(2.0 * period),
            _ => period,
        } as f32;
        self.last_tick = Some(now);

        let mut stop = self.stop_reason(now);
        let mut gait = None;
        let mut twist = PlanarTwist::default();
        if let (None, Some(target)) = (&stop, &self.target) {
            let c = &self.config;
            let axis = |sent: f32, want: f32, limit: AxisLimit| {
                let want = want.clamp(limit.min, limit.max);
                let step = limit.max_accel * dt;
                (sent + (want - sent).clamp(-step, step)).clamp(limit.min, limit.max)
            };
            twist = PlanarTwist {
                x_vel: axis(self.sent.x_vel, target.twist.x_vel, c.x_vel),
                y_vel: axis(self.sent.y_vel, target.twist.y_vel, c.y_vel),
                yaw_vel: axis(self.sent.yaw_vel, target.twist.yaw_vel, c.yaw_vel),
            };
            gait = Some(target.gait);
            let finite = [twist.x_vel, twist.y_vel, twist.yaw_vel].iter().all(|v| v.is_finite())
                && gait_is_finite(&target.gait);
            if !finite {
                twist = PlanarTwist::default();
                gait = None;
                stop = Some(StopReason::NonFinite);
            }
        }
        self.sent = twist;
        ControlOutput { twist, gait, stop }
    }
}

fn gait_is_finite(g: &GaitFields) -> bool {
    [g.body_height, g.step_frequency, g.footswing_height, g.pitch, g.stance_width]
        .iter()
        .chain(&g.phase_offsets)
        .all(|v| v.is_finite())
}

#[cfg(test)]
mod tests;
