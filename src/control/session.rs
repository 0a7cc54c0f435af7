//! One control session: the `Controller` plus what every driver of it keeps (the stop in force and
//! its changes, counters, decision latency). The node, bag replay and the simulator are thin
//! adapters over it: they bring instructions, frames and decisions on their own clock, and
//! publish, record or act on each `Tick`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Applied, ConfigError, ControlConfig, ControlOutput, Controller, LatencyStats, StopReason};
use crate::policy::{Decision, PolicyError};

/// What a session has seen and done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Instructions given, valid or not.
    pub instructions: u64,
    pub bad_instructions: u64,
    /// Good frames received.
    pub frames: u64,
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
    /// Control ticks, each one command out.
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
}

pub struct Session {
    controller: Controller,
    /// The stop of the last tick.
    stop: Option<StopReason>,
    counters: Counters,
    latency: LatencyStats,
}

impl Session {
    /// `latency_window`: how many recent decisions the latency quantiles cover.
    pub fn new(config: ControlConfig, latency_window: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            controller: Controller::new(config)?,
            stop: None,
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

    pub fn set_enabled(&mut self, enabled: bool) {
        self.controller.set_enabled(enabled);
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

    /// A good frame with header stamp `stamp` arrived at `now`; `dropped`: it replaced one the
    /// model had not taken yet.
    pub fn frame_received(&mut self, now: f64, stamp: Duration, dropped: bool) {
        self.counters.frames += 1;
        self.counters.dropped_frames += u64::from(dropped);
        self.controller.frame_received(now, stamp);
    }

    pub fn bad_frame(&mut self) {
        self.counters.bad_frames += 1;
    }

    /// The inference thread is gone: stop for good.
    pub fn inference_died(&mut self) {
        self.controller.inference_died();
    }

    /// A decision made for `instruction` on the frame received at `frame_time`, `latency_ms`
    /// after that frame arrived. Unless it is stale, the command goes out at once (at `now`)
    /// rather than at the next tick: that tick is returned.
    pub fn decided(
        &mut self,
        instruction: &Arc<str>,
        result: &Result<Decision, PolicyError>,
        frame_time: f64,
        latency_ms: f32,
        now: f64,
    ) -> (Applied, Option<Tick>) {
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
    pub fn tick(&mut self, now: f64) -> Tick {
        let output = self.controller.tick(now);
        let stop_changed = output.stop.as_ref().map(StopReason::kind) != self.stop.as_ref().map(StopReason::kind);
        if stop_changed {
            if let Some(reason) = &output.stop {
                self.counters.stops.entry(reason.kind()).or_insert((0, reason.to_string())).0 += 1;
            }
        }
        self.stop = output.stop.clone();
        self.counters.commands += 1;
        Tick { output, stop_changed }
    }
}
