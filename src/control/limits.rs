//! The controller's settings: velocity, acceleration and gait limits, the watchdogs' timeouts,
//! and their validation. Built from named parameters in `params.rs`.

use super::ControlParams;
use crate::action::GaitFields;

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

    pub(super) fn step(&self, sent: f32, want: f32, dt: f32) -> f32 {
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
    /// A frame whose header stamp is further than this from ROS time (behind or ahead) is not
    /// fresh: a stream arriving late, or a camera on another clock. 0 = no check.
    pub max_frame_latency_s: f64,
    /// Stop unless a deadman heartbeat came within this (steady time). 0 = no deadman.
    pub deadman_timeout_s: f64,
    /// After a stop with nothing to follow (disabled, e-stop, no instruction, terminated), stop
    /// commands go out for this long and then none, so a lower-priority source (twist_mux) takes over.
    pub idle_settle_s: f64,
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
        within("max_frame_latency_s", self.max_frame_latency_s, 0.0..=10.0, "must be within 0..10 s (0 = no check)")?;
        within("deadman_timeout_s", self.deadman_timeout_s, 0.0..=10.0, "must be within 0..10 s (0 = no deadman)")?;
        within("idle_settle_s", self.idle_settle_s, 0.0..=10.0, "must be within 0..10 s")?;
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
