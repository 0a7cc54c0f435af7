//! One control session: the `Controller` plus what every driver of it keeps (the stop in force and
//! its changes, counters, decision latency). The node, bag replay and the simulator are thin
//! adapters over it: they bring instructions, frames and decisions on their own clock, and
//! publish, record or act on each `Tick`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Applied, ConfigError, ControlConfig, ControlOutput, Controller, FrameCheck, LatencyStats, Now, StopReason};
use crate::policy::{Decision, PolicyError};

/// What a session has seen and done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Instructions given, valid or not.
    pub instructions: u64,
    pub bad_instructions: u64,
    /// Good frames received.
    pub frames: u64,
    /// Good frames that were not fresh (a repeated or late stamp): not decided on.
    pub stale_frames: u64,
    /// Frames replaced in the inference slot before the model took them.
    pub dropped_frames: u64,
    pub bad_frames: u64,
    /// Decisions the model made, followed or not.
    pub decisions: u64,
    /// Decisions that failed (bad frame, model error) or that the controller refused (non-finite).
    pub failed_decisions: u64,
    /// Decisions, made or failed, that were ignored: their instruction is no longer in force, or the
    /// robot holds after a terminate.
    pub stale_decisions: u64,
    /// Control ticks that sent a command.
    pub commands: u64,
    /// Times the session went into a stop, by `StopReason::kind`, with the first such reason's text.
    pub stops: BTreeMap<&'static str, (u64, String)>,
}

/// The outcome of one control tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub output: ControlOutput,
    /// The stop changed kind at this tick: a stop began, ended, or has a different reason.
    pub stop_changed: bool,
    /// Send the command. False once an idle stop has been sent for `idle_settle_s`: the
    /// robot is not meant to move, and silence lets a lower-priority source (twist_mux) through.
    pub publish: bool,
}

pub struct Session {
    controller: Controller,
    /// The stop of the last tick.
    stop: Option<StopReason>,
    /// Steady time the current idle stop began at.
    idle_since: Option<f64>,
    counters: Counters,
    latency: LatencyStats,
}

impl Session {
    /// `latency_window`: how many recent decisions the latency quantiles cover.
    pub fn new(config: ControlConfig, latency_window: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            controller: Controller::new(config)?,
            stop: None,
            // Idle from the start, and settled: nothing was sent that a stop must follow.
            idle_since: Some(f64::NEG_INFINITY),
            counters: Counters::default(),
            latency: LatencyStats::new(latency_window),
        })
    }

    pub fn config(&self) -> &ControlConfig {
        self.controller.config()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn latency(&self) -> &LatencyStats {
        &self.latency
    }

    /// The instruction in force.
    pub fn instruction(&self) -> Option<&Arc<str>> {
        self.controller.instruction()
    }

    pub fn enabled(&self) -> bool {
        self.controller.enabled()
    }

    /// The stop of the last tick.
    pub fn stop(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// New controller settings while running (see `Controller::set_config`).
    pub fn set_config(&mut self, config: ControlConfig) -> Result<(), ConfigError> {
        self.controller.set_config(config)
    }

    /// See `Controller::set_enabled`: false when refused (e-stop engaged).
    pub fn set_enabled(&mut self, enabled: bool) -> bool {
        self.controller.set_enabled(enabled)
    }

    pub fn estop(&self) -> bool {
        self.controller.estop()
    }

    /// See `Controller::set_estop`.
    pub fn set_estop(&mut self, engaged: bool) {
        self.controller.set_estop(engaged);
    }

    /// See `Controller::heartbeat`.
    pub fn heartbeat(&mut self, now: impl Into<Now>, held: bool) {
        self.controller.heartbeat(now, held);
    }

    /// What is wrong with the camera input at `now`, armed or not.
    pub fn camera_problem(&self, now: impl Into<Now>) -> Option<StopReason> {
        self.controller.camera_problem(now)
    }

    /// A valid instruction starts over (see `Controller::set_instruction`).
    pub fn instruct(&mut self, instruction: Arc<str>) {
        self.counters.instructions += 1;
        self.controller.set_instruction(Some(instruction));
    }

    /// An invalid instruction replaces the one in force: the robot stops until a valid one.
    pub fn reject_instruction(&mut self) {
        self.counters.instructions += 1;
        self.counters.bad_instructions += 1;
        self.controller.set_instruction(None);
    }

    /// The instruction is withdrawn (a cancelled goal): stop and hold.
    pub fn clear_instruction(&mut self) {
        self.controller.set_instruction(None);
    }

    /// A good frame with header stamp `stamp` arrived at `now`. Decide on it only if fresh.
    pub fn frame_received(&mut self, now: impl Into<Now>, stamp: Duration) -> FrameCheck {
        self.counters.frames += 1;
        let check = self.controller.frame_received(now, stamp);
        self.counters.stale_frames += u64::from(!check.is_fresh());
        check
    }

    /// A frame replaced one the model had not taken yet.
    pub fn frame_dropped(&mut self) {
        self.counters.dropped_frames += 1;
    }

    pub fn bad_frame(&mut self) {
        self.counters.bad_frames += 1;
    }

    /// The inference thread is gone: stop for good.
    pub fn inference_died(&mut self) {
        self.controller.inference_died();
    }

    /// A decision made for `instruction` on the frame received at `frame_time` (ROS time),
    /// `latency_ms` after that frame arrived. Unless it is stale, the command goes out at once (at
    /// `now`) rather than at the next tick: that tick is returned.
    pub fn decided(
        &mut self,
        instruction: &Arc<str>,
        result: &Result<Decision, PolicyError>,
        frame_time: f64,
        latency_ms: f32,
        now: impl Into<Now>,
    ) -> (Applied, Option<Tick>) {
        let now = self.controller.observe(now);
        self.latency.record(latency_ms);
        let applied = self.controller.apply(instruction, result, frame_time);
        match result {
            Ok(_) => self.counters.decisions += 1,
            Err(_) => self.counters.failed_decisions += 1,
        }
        match applied {
            Applied::Stale => self.counters.stale_decisions += 1,
            Applied::Failed if result.is_ok() => self.counters.failed_decisions += 1,
            _ => {}
        }
        let tick = (applied != Applied::Stale).then(|| self.tick(now));
        (applied, tick)
    }

    /// The command for the control tick at `now`.
    pub fn tick(&mut self, now: impl Into<Now>) -> Tick {
        let now = now.into();
        let output = self.controller.tick(now);
        let stop_changed = output.stop.as_ref().map(StopReason::kind) != self.stop.as_ref().map(StopReason::kind);
        if stop_changed {
            if let Some(reason) = &output.stop {
                self.counters.stops.entry(reason.kind()).or_insert((0, reason.to_string())).0 += 1;
            }
        }
        let idle = output.stop.as_ref().is_some_and(StopReason::is_idle);
        // A change between idle stops (disabled, then no instruction) keeps counting from the first.
        self.idle_since = match (idle, self.idle_since) {
            (false, _) => None,
            (true, Some(since)) if since <= now.steady => Some(since),
            (true, _) => Some(now.steady),
        };
        let publish = self.idle_since.is_none_or(|since| now.steady - since <= self.config().idle_settle_s);
        self.stop = output.stop.clone();
        self.counters.commands += u64::from(publish);
        Tick { output, stop_changed, publish }
    }
}
