//! The controller between decisions and the robot: which command goes out at each control tick,
//! and every safety rule on the way (frame and decision watchdogs, enable, e-stop, deadman,
//! terminate hold, velocity, acceleration and gait limits, non-finite guard). Time is an argument,
//! never read from a clock, so the live node, bag replay and the simulator drive the same code with
//! their own clocks.
//!
//! Two clocks come in (`Now`): ROS time, which `use_sim_time` makes jump back (a looping bag, a
//! simulator reset) or freeze (a paused `/clock`), and a steady clock that does neither. Every
//! watchdog holds on both, so no behaviour of ROS time can keep the robot moving.

mod copies;
mod limits;
mod params;
mod session;
mod stats;
mod stop;

use std::sync::Arc;
use std::time::Duration;

use crate::action::{ActionCommand, GaitFields, PlanarTwist};
use crate::policy::{Decision, PolicyError};
pub use copies::CopyFilter;
pub use limits::{AxisLimit, ConfigError, ControlConfig, GaitLimit, GaitLimits, NEUTRAL_GAIT};
pub use params::{ControlParams, ParamSpec, ParamTypeError, ParamValue};
pub use session::{Counters, Session, Tick};
pub use stop::StopReason;

/// The time of an event on the controller's two clocks, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// ROS time (simulated time with `use_sim_time`): what frame stamps are compared with.
    pub ros: f64,
    /// A steady clock: never jumps, never stops.
    pub steady: f64,
}

/// A driver with one monotonic clock (bag replay, the simulator) passes it as both.
impl From<f64> for Now {
    fn from(t: f64) -> Self {
        Self { ros: t, steady: t }
    }
}

/// ROS time going back by more than this is a jump (a reset), not rounding.
const BACKWARD_JUMP_S: f64 = 1e-3;
pub use stats::{nearest_rank, LatencyStats};

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

/// How the controller took a good frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameCheck {
    /// Fresh: it feeds the image watchdog and is worth a decision.
    Fresh,
    /// Its header stamp repeats the previous frame's (`require_new_stamps`).
    RepeatedStamp,
    /// Its header stamp is `lag_s` behind ROS time (negative: ahead), beyond `max_frame_latency_s`.
    Late { lag_s: f64 },
}

impl FrameCheck {
    pub fn is_fresh(&self) -> bool {
        *self == Self::Fresh
    }
}

pub struct Controller {
    config: ControlConfig,
    enabled: bool,
    estop: bool,
    instruction: Option<Arc<str>>,
    /// The newest event's time; ROS time below it is a backward jump.
    latest: Option<Now>,
    /// Set by a backward jump of ROS time (by how much), cleared by the next fresh frame.
    jumped_back: Option<f64>,
    /// Receipt time of the newest fresh frame.
    last_frame: Option<Now>,
    /// Header stamp of the newest frame, and the steady time a frame last repeated it.
    last_stamp: Option<Duration>,
    last_repeat: Option<f64>,
    /// Steady time and lag of the newest late frame.
    last_late: Option<(f64, f64)>,
    /// Steady time of the newest deadman heartbeat (None: never, or released).
    last_heartbeat: Option<f64>,
    target: Option<ActionCommand>,
    /// Receipt time (ROS) of the frame the followed decision was made on, and the steady time it
    /// was applied at.
    target_frame: f64,
    target_applied: f64,
    terminated: bool,
    failure: Option<String>,
    inference_died: bool,
    /// Last twist and gait sent, the start points of acceleration and rate limiting.
    sent: PlanarTwist,
    sent_gait: GaitFields,
    /// Steady time of the last tick.
    last_tick: Option<f64>,
}

impl Controller {
    pub fn new(config: ControlConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            enabled: true,
            estop: false,
            instruction: None,
            latest: None,
            jumped_back: None,
            last_frame: None,
            last_stamp: None,
            last_repeat: None,
            last_late: None,
            last_heartbeat: None,
            target: None,
            target_frame: 0.0,
            target_applied: 0.0,
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

    /// Armed: enabled and no e-stop engaged.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn estop(&self) -> bool {
        self.estop
    }

    /// A new instruction (even the same text again) starts over: it releases a terminate hold and
    /// the robot waits for the first decision made for it. `None` clears the instruction.
    pub fn set_instruction(&mut self, instruction: Option<Arc<str>>) {
        self.instruction = instruction;
        self.target = None;
        self.terminated = false;
        self.failure = None;
    }

    /// Disabling stops and holds; enabling waits for the next decision rather than resuming an old
    /// one. Enabling is refused (false) while the e-stop is engaged.
    pub fn set_enabled(&mut self, enabled: bool) -> bool {
        if enabled && self.estop {
            return false;
        }
        if enabled && !self.enabled {
            self.target = None;
        }
        self.enabled = enabled;
        true
    }

    /// Engaging the e-stop stops, disarms and holds; releasing it leaves the robot disarmed, so
    /// only `set_enabled(true)` (an operator) moves it again.
    pub fn set_estop(&mut self, engaged: bool) {
        if engaged {
            self.enabled = false;
            self.target = None;
        }
        self.estop = engaged;
    }

    /// A deadman heartbeat at `now`: `held` false (released) stops at once.
    pub fn heartbeat(&mut self, now: impl Into<Now>, held: bool) {
        let now = self.observe(now.into());
        self.last_heartbeat = held.then_some(now.steady);
    }

    /// Takes note of `now`: a backward jump of ROS time forgets every frame, stamp and decision
    /// (their times belong to the old timeline) and stops until a frame arrives on the new one.
    pub fn observe(&mut self, now: impl Into<Now>) -> Now {
        let now = now.into();
        if let Some(latest) = self.latest {
            if now.ros < latest.ros - BACKWARD_JUMP_S {
                self.jumped_back = Some(latest.ros - now.ros);
                self.last_frame = None;
                self.last_stamp = None;
                self.last_repeat = None;
                self.last_late = None;
                self.target = None;
            }
        }
        self.latest = Some(now);
        now
    }

    /// A good frame with header stamp `stamp` (zero: unstamped) arrived at `now`. Only a fresh
    /// frame feeds the image watchdog; the caller decides on fresh frames only.
    pub fn frame_received(&mut self, now: impl Into<Now>, stamp: Duration) -> FrameCheck {
        let now = self.observe(now);
        let repeated = self.config.require_new_stamps && !stamp.is_zero() && self.last_stamp == Some(stamp);
        self.last_stamp = Some(stamp);
        let lag_s = now.ros - stamp.as_secs_f64();
        if repeated {
            self.last_repeat = Some(now.steady);
            FrameCheck::RepeatedStamp
        } else if self.config.max_frame_latency_s > 0.0 && !stamp.is_zero() && lag_s.abs() > self.config.max_frame_latency_s {
            self.last_late = Some((now.steady, lag_s));
            FrameCheck::Late { lag_s }
        } else {
            self.last_frame = Some(now);
            self.jumped_back = None;
            FrameCheck::Fresh
        }
    }

    /// The inference thread is gone: stop for good.
    pub fn inference_died(&mut self) {
        self.inference_died = true;
    }

    /// Takes a decision from the policy, made on the frame received at `frame_time` (ROS time) for
    /// `instruction`: the very instruction given to `set_instruction` (the same `Arc`), so a
    /// decision made for an earlier copy of the same text (re-sent, or a new goal) is stale. It is
    /// applied at the latest time `observe` saw. A decision on a frame from before a backward clock
    /// jump is stale too.
    pub fn apply(&mut self, instruction: &Arc<str>, result: &Result<Decision, PolicyError>, frame_time: f64) -> Applied {
        let current = self.instruction.as_ref().is_some_and(|given| Arc::ptr_eq(given, instruction));
        let before_jump = self.jumped_back.is_some() || self.latest.is_some_and(|l| frame_time > l.ros + BACKWARD_JUMP_S);
        if !current || self.terminated || before_jump {
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
                self.target_applied = self.latest.map_or(frame_time, |l| l.steady);
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

    /// What is wrong with the camera input at `now`, armed or not (for the stop and diagnostics).
    /// A frame's age is the larger of its ages on the two clocks.
    pub fn camera_problem(&self, now: impl Into<Now>) -> Option<StopReason> {
        let now = now.into();
        let Some(frame) = self.last_frame else {
            return Some(match self.jumped_back {
                Some(by_s) => StopReason::ClockJumpedBack { by_s },
                None => StopReason::NoFrame,
            });
        };
        let age_s = (now.ros - frame.ros).max(now.steady - frame.steady);
        if age_s <= self.config.image_timeout_s {
            return None;
        }
        Some(match (self.last_repeat, self.last_late) {
            (Some(repeat), _) if repeat > frame.steady => StopReason::FrozenStamps { age_s },
            (_, Some((late, lag_s))) if late > frame.steady => StopReason::LateFrames { age_s, lag_s },
            _ => StopReason::StaleFrame { age_s },
        })
    }

    /// Why the robot must stand still at `now`, if it must.
    pub fn stop_reason(&self, now: impl Into<Now>) -> Option<StopReason> {
        let now = now.into();
        if self.inference_died {
            return Some(StopReason::InferenceDied);
        }
        if self.estop {
            return Some(StopReason::EStop);
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
        if self.config.deadman_timeout_s > 0.0
            && self.last_heartbeat.is_none_or(|beat| now.steady - beat > self.config.deadman_timeout_s)
        {
            return Some(StopReason::Deadman);
        }
        if let Some(problem) = self.camera_problem(now) {
            return Some(problem);
        }
        if let Some(reason) = &self.failure {
            return Some(StopReason::DecisionFailed(reason.clone()));
        }
        if self.target.is_none() {
            return Some(StopReason::Waiting);
        }
        let age_s = (now.ros - self.target_frame).max(now.steady - self.target_applied);
        if age_s > self.config.max_decision_age_s {
            return Some(StopReason::StaleDecision { age_s });
        }
        None
    }

    /// The command for the control tick at `now`. Stops are immediate; moving commands are clamped
    /// to the velocity limits and approach the decision's twist at the acceleration limits. The
    /// gait approaches the decision's (or, stopped, the neutral one) within the gait limits.
    pub fn tick(&mut self, now: impl Into<Now>) -> ControlOutput {
        let now = self.observe(now);
        let period = self.config.period_s();
        // Steps are measured on the steady clock; a long pause counts at most two periods, so a
        // late tick cannot leap.
        let dt = match self.last_tick {
            Some(last) if now.steady >= last => (now.steady - last).min(2.0 * period),
            _ => period,
        } as f32;
        self.last_tick = Some(now.steady);

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
