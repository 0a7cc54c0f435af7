//! The closed loop shared by data collection and evaluation. Every control step
//! (`CONTROL_PERIOD_NS`, 0.2 s): render the camera, let the driver decide, pass the decision
//! through the node's control `Session` (frame received, decided, tick), and drive the world with
//! what it commands. A terminate hold is the terminate action to the world.

use std::sync::Arc;

use crate::control::{ControlConfig, ControlOutput, Session};
use crate::policy::{Decision, PolicyError};

use super::driver::{Driver, Observation};
use super::task::Scenario;
use super::world::{Outcome, WorldCommand, CONTROL_RATE_HZ};
use super::worlds::{new_world, WorldKind};
use super::SimError;

/// The controller settings of the simulator: the node's defaults at the simulator's 5 Hz.
pub fn sim_control_config() -> ControlConfig {
    ControlConfig { control_rate_hz: CONTROL_RATE_HZ, ..ControlConfig::default() }
}

/// One control step, as it happened.
pub struct Step<'a> {
    /// 0-based.
    pub index: u32,
    /// Seconds since the episode started (the frame's time).
    pub time_s: f64,
    /// The camera frame of this step: rgb8, image size x image size.
    pub pixels: &'a [u8],
    pub decision: &'a Result<Decision, PolicyError>,
    /// What the controller commanded after this frame.
    pub output: &'a ControlOutput,
}

/// Plays `scenario` in a world of `kind` with `driver` through a fresh control `Session`;
/// `on_step` sees every step (for recording). Returns the world's verdict.
pub fn run_episode(
    kind: WorldKind,
    scenario: Scenario,
    driver: &mut dyn Driver,
    image_size: u32,
    on_step: &mut dyn FnMut(&Step<'_>) -> Result<(), SimError>,
) -> Result<Outcome, SimError> {
    if image_size == 0 {
        return Err(SimError::Invalid("the image size must be positive".into()));
    }
    let instruction: Arc<str> = Arc::from(scenario.instruction.as_str());
    let mut world = new_world(kind, scenario)?;
    let mut session = Session::new(sim_control_config(), 1)?;
    session.instruct(instruction.clone());
    let mut pixels = Vec::new();
    for index in 0..world.scenario().family.max_steps() {
        let time_s = index as f64 / CONTROL_RATE_HZ;
        world.render(image_size, &mut pixels)?;
        let obs = Observation {
            pixels: &pixels,
            width: image_size,
            height: image_size,
            instruction: &instruction,
            world: world.as_ref(),
            time_s,
        };
        let decision = driver.decide(&obs);
        // The simulated camera stamps each frame with its time; inference takes no world time.
        session.frame_received(time_s, std::time::Duration::from_secs_f64(time_s));
        let (_, tick) = session.decided(&instruction, &decision, time_s, 0.0, time_s);
        // A stale decision (the terminate hold) sends no command of its own: tick anyway.
        let output = tick.unwrap_or_else(|| session.tick(time_s)).output;
        on_step(&Step { index, time_s, pixels: &pixels, decision: &decision, output: &output })?;
        if let Some(outcome) = world.step(&WorldCommand::from_control(&output)) {
            return Ok(outcome);
        }
    }
    // The world ends every episode at its family's step limit.
    world.outcome().ok_or_else(|| SimError::Invalid("the episode did not end at its step limit".into()))
}
