//! The controller between decisions and the robot: which command goes out at each control tick,
//! and every safety rule on the way (frame and decision watchdogs, enable, terminate hold,
//! velocity, acceleration and gait limits, non-finite guard). Time is an argument, never read from a clock, so the live node,
//! bag replay and the simulator drive the same code with their own clocks.

mod copies;
mod params;
mod session;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::action::{ActionCommand, GaitFields, PlanarTwist};
use crate::policy::{Decision, PolicyError};
pub use copies::CopyFilter;
pub use params::ControlParams;
pub use session::{Counters, Session, Tick};
pub use stats::{nearest_rank, LatencyStats};

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

    fn step(&self, sent: f32, want: f32, dt: f32) -> f32 {
        approach(sent, want, self.min, self.max, self.max_accel * dt)
    }
}

/// `sent` moved toward `want` (clamped to `[min, max]`) by at most `max_step`, inside `[min, max]`.
fn approach(sent: f32, want: f32, min: f32, max: f32, max_step: f32) -> f32 {
    let want = want.clamp(min, max);
    (sent + (want - sent).clamp(-max_step, max_step)).clamp(min, max)
}

/// Allowed range of one gait field and how fast it may change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaitLimit {
    pub min: f32,
    pub max: f32,
    /// Largest change per second (field units per second).
    pub max_rate: f32,
}

impl GaitLimit {
    /// `sent` moved toward `want` by at most `max_rate * dt`, inside `[min, max]`.
    fn step(&self, sent: f32, want: f32, dt: f32) -> f32 {
        approach(sent, want, self.min, self.max, self.max_rate * dt)
    }

    fn contains(&self, value: f32) -> bool {
        (self.min..=self.max).contains(&value)
    }
}

/// Limits of every gait field (defaults: `ControlParams::default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaitLimits {
    /// m, offset from the nominal height (negative = crouch).
    pub body_height: GaitLimit,
    /// Hz.
    pub step_frequency: GaitLimit,
    /// Each of the three phase offsets (fraction of a gait cycle).
    pub phase_offset: GaitLimit,
    /// m.
    pub footswing_height: GaitLimit,
    /// rad, REP 103: positive = nose down.
    pub pitch: GaitLimit,
    /// m.
    pub stance_width: GaitLimit,
}

impl GaitLimits {
    fn fields(&self) -> [(&'static str, GaitLimit); 6] {
        [
            ("body_height", self.body_height),
            ("step_frequency", self.step_frequency),
            ("phase_offset", self.phase_offset),
            ("footswing_height", self.footswing_height),
            ("pitch", self.pitch),
            ("stance_width", self.stance_width),
        ]
    }

    /// `sent` moved toward `want` over `dt` seconds, within every field's range and rate.
    pub fn step(&self, sent: &GaitFields, want: &GaitFields, dt: f32) -> GaitFields {
        let phase = |i: usize| self.phase_offset.step(sent.phase_offsets[i], want.phase_offsets[i], dt);
        GaitFields {
            body_height: self.body_height.step(sent.body_height, want.body_height, dt),
            step_frequency: self.step_frequency.step(sent.step_frequency, want.step_frequency, dt),
            phase_offsets: [phase(0), phase(1), phase(2)],
            footswing_height: self.footswing_height.step(sent.footswing_height, want.footswing_height, dt),
            pitch: self.pitch.step(sent.pitch, want.pitch, dt),
            stance_width: self.stance_width.step(sent.stance_width, want.stance_width, dt),
        }
    }

    pub fn contains(&self, g: &GaitFields) -> bool {
        self.body_height.contains(g.body_height)
            && self.step_frequency.contains(g.step_frequency)
            && g.phase_offsets.iter().all(|&p| self.phase_offset.contains(p))
            && self.footswing_height.contains(g.footswing_height)
            && self.pitch.contains(g.pitch)
            && self.stance_width.contains(g.stance_width)
    }
}

/// The gait sent while stopped: a standing trot at nominal height, level, mid stance.
pub const NEUTRAL_GAIT: GaitFields = GaitFields {
    body_height: 0.0,
    step_frequency: 3.0,
    phase_offsets: [0.5, 0.0, 0.0],
    footswing_height: 0.12,
    pitch: 0.0,
    stance_width: 0.3,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlConfig {
    /// Commands go out at this rate.
    pub control_rate_hz: f64,
    /// Stop when the newest frame is older than this.
    pub image_timeout_s: f64,
    /// Stop when the decision being followed was made on a frame older than this: inference hung
    /// or fell behind while frames kept arriving.
    pub max_decision_age_s: f64,
    /// A frame whose header stamp equals the previous frame's (a driver re-sending an old frame)
    /// does not count as fresh for the image watchdog. Unstamped (zero) frames always count.
    pub require_new_stamps: bool,
    pub x_vel: AxisLimit,
    pub y_vel: AxisLimit,
    pub yaw_vel: AxisLimit,
    pub gait: GaitLimits,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlParams::default().to_config()
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
        positive("max_decision_age_s", self.max_decision_age_s)?;
        // Bounded too: a tick every few minutes, or a watchdog of hours, would switch the stops off.
        let within = |name, value: f64, range: std::ops::RangeInclusive<f64>, reason| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(ConfigError { name, value, reason })
            }
        };
        within("control_rate_hz", self.control_rate_hz, 1.0..=1000.0, "must be within 1..1000 Hz")?;
        within("image_timeout_s", self.image_timeout_s, 0.0..=10.0, "must be at most 10 s")?;
        within("max_decision_age_s", self.max_decision_age_s, 0.0..=10.0, "must be at most 10 s")?;
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
        for (name, limit) in self.gait.fields() {
            if !(limit.min.is_finite() && limit.max.is_finite() && limit.min <= limit.max) {
                return Err(ConfigError { name, value: limit.min as f64, reason: "the range must be finite with min <= max" });
            }
            positive(name, limit.max_rate as f64)?;
        }
        if !self.gait.contains(&NEUTRAL_GAIT) {
            return Err(ConfigError {
                name: "gait",
                value: 0.0,
                reason: "the limits must contain the neutral gait (body_height 0, step_frequency 3, trot, footswing_height 0.12, pitch 0, stance_width 0.3)",
            });
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
    StaleFrame {
        age_s: f64,
    },
    /// Frames keep arriving, but with the stamp of one already seen.
    FrozenStamps {
        age_s: f64,
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
            Self::Disabled => "disabled",
            Self::NoInstruction => "no_instruction",
            Self::NoFrame => "no_frame",
            Self::StaleFrame { .. } => "stale_frame",
            Self::FrozenStamps { .. } => "frozen_stamps",
            Self::StaleDecision { .. } => "stale_decision",
            Self::InferenceDied => "inference_died",
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
            Self::FrozenStamps { age_s } => {
                write!(f, "camera frames repeat an old header stamp; the newest new one is {age_s:.2} s old")
            }
            Self::StaleDecision { age_s } => write!(f, "newest decision was made on a frame {age_s:.2} s old"),
            Self::InferenceDied => write!(f, "the inference thread died"),
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
    /// Limited and finite: the decision's gait while following, on the way to the neutral gait
    /// while stopped.
    pub gait: GaitFields,
    pub stop: Option<StopReason>,
}

impl ControlOutput {
    /// A stop in the neutral gait, for when no controller is ticking (shutdown).
    pub fn standstill() -> Self {
        Self { twist: PlanarTwist::default(), gait: NEUTRAL_GAIT, stop: None }
    }
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
    /// Receipt time of the newest fresh frame.
    last_frame: Option<f64>,
    /// Header stamp of the newest frame, and when a frame last repeated it.
    last_stamp: Option<Duration>,
    last_repeat: Option<f64>,
    target: Option<ActionCommand>,
    /// Receipt time of the frame the followed decision was made on.
    target_frame: f64,
    terminated: bool,
    failure: Option<String>,
    inference_died: bool,
    /// Last twist and gait sent, the start points of acceleration and rate limiting.
    sent: PlanarTwist,
    sent_gait: GaitFields,
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
            last_stamp: None,
            last_repeat: None,
            target: None,
            target_frame: 0.0,
            terminated: false,
            failure: None,
            inference_died: false,
            sent: PlanarTwist::default(),
            sent_gait: NEUTRAL_GAIT,
            last_tick: None,
        })
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// New settings while running (a parameter change). The command in progress continues from
    /// where it is; the next tick clamps it to the new limits at once, without an acceleration
    /// ramp, because a limit is a limit.
    pub fn set_config(&mut self, config: ControlConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
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

    /// A good frame with header stamp `stamp` (zero: unstamped) arrived at `now` (seconds on the
    /// controller's clock).
    pub fn frame_received(&mut self, now: f64, stamp: Duration) {
        let repeated = self.config.require_new_stamps && !stamp.is_zero() && self.last_stamp == Some(stamp);
        self.last_stamp = Some(stamp);
        if repeated {
            self.last_repeat = Some(now);
        } else {
            self.last_frame = Some(self.last_frame.map_or(now, |t| t.max(now)));
        }
    }

    /// The inference thread is gone: stop for good.
    pub fn inference_died(&mut self) {
        self.inference_died = true;
    }

    /// Takes a decision from the policy, made on the frame received at `frame_time` for
    /// `instruction`: the very instruction given to `set_instruction` (the same `Arc`), so a
    /// decision made for an earlier copy of the same text (re-sent, or a new goal) is stale.
    pub fn apply(&mut self, instruction: &Arc<str>, result: &Result<Decision, PolicyError>, frame_time: f64) -> Applied {
        let current = self.instruction.as_ref().is_some_and(|given| Arc::ptr_eq(given, instruction));
        if !current || self.terminated {
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
                self.target_frame = frame_time;
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
        if self.inference_died {
            return Some(StopReason::InferenceDied);
        }
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
            return Some(match self.last_repeat {
                Some(repeat) if repeat > frame => StopReason::FrozenStamps { age_s },
                _ => StopReason::StaleFrame { age_s },
            });
        }
        if let Some(reason) = &self.failure {
            return Some(StopReason::DecisionFailed(reason.clone()));
        }
        if self.target.is_none() {
            return Some(StopReason::Waiting);
        }
        let age_s = now - self.target_frame;
        if age_s > self.config.max_decision_age_s {
            return Some(StopReason::StaleDecision { age_s });
        }
        None
    }

    /// The command for the control tick at `now`. Stops are immediate; moving commands are clamped
    /// to the velocity limits and approach the decision's twist at the acceleration limits. The
    /// gait approaches the decision's (or, stopped, the neutral one) within the gait limits.
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
        let toward_neutral = self.config.gait.step(&self.sent_gait, &NEUTRAL_GAIT, dt);
        let mut gait = toward_neutral;
        let mut twist = PlanarTwist::default();
        if let (None, Some(target)) = (&stop, &self.target) {
            let c = &self.config;
            twist = PlanarTwist {
                x_vel: c.x_vel.step(self.sent.x_vel, target.twist.x_vel, dt),
                y_vel: c.y_vel.step(self.sent.y_vel, target.twist.y_vel, dt),
                yaw_vel: c.yaw_vel.step(self.sent.yaw_vel, target.twist.yaw_vel, dt),
            };
            gait = c.gait.step(&self.sent_gait, &target.gait, dt);
            let finite = [twist.x_vel, twist.y_vel, twist.yaw_vel].iter().all(|v| v.is_finite()) && gait_is_finite(&target.gait);
            if !finite {
                twist = PlanarTwist::default();
                gait = toward_neutral;
                stop = Some(StopReason::NonFinite);
            }
        }
        self.sent = twist;
        self.sent_gait = gait;
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
