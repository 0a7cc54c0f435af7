//! The task world's backends behind one interface: the kinematic world (`world.rs`: the robot
//! moves exactly as commanded, a ray-cast camera) and the physics world (feature `physics`: a
//! Unitree Go2 in MuJoCo under a learned walking policy, MuJoCo's camera). Scenes, task families,
//! instructions, outcomes and experts are the same for both.

use super::render::render_into;
use super::scene::Pose;
use super::task::Scenario;
use super::world::{Outcome, World, WorldCommand};
use super::SimError;

/// A scenario being played, in either backend.
pub trait TaskWorld {
    fn scenario(&self) -> &Scenario;

    /// The robot's planar pose and body height offset (what experts and the rules read).
    fn pose(&self) -> Pose;

    /// Control steps taken so far.
    fn steps(&self) -> u32;

    /// The verdict, once the episode has ended.
    fn outcome(&self) -> Option<Outcome>;

    /// Advances one control step under `command`; returns the verdict when the episode ends
    /// during it. After the end, the world no longer moves.
    fn step(&mut self, command: &WorldCommand) -> Option<Outcome>;

    /// The head camera's frame now: rgb8, `size` x `size`, row-major, into `pixels`.
    fn render(&mut self, size: u32, pixels: &mut Vec<u8>) -> Result<(), SimError>;
}

/// Which backend plays the scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorldKind {
    /// The robot moves exactly as commanded; a ray-cast camera.
    #[default]
    Kinematic,
    /// A Unitree Go2 in MuJoCo under a learned walking policy, seen through MuJoCo's camera
    /// (needs a build with the cargo feature `physics` and `scripts/setup.sh`).
    Physics,
}

impl WorldKind {
    /// Whether this build can play the world (the physics world needs the cargo feature).
    pub fn available(self) -> bool {
        match self {
            Self::Kinematic => true,
            Self::Physics => cfg!(feature = "physics"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kinematic => "kinematic",
            Self::Physics => "physics",
        }
    }
}

impl std::fmt::Display for WorldKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A world of `kind` playing `scenario`.
pub fn new_world(kind: WorldKind, scenario: Scenario) -> Result<Box<dyn TaskWorld>, SimError> {
    match kind {
        WorldKind::Kinematic => Ok(Box::new(World::new(scenario))),
        WorldKind::Physics => physics_world(scenario),
    }
}

#[cfg(feature = "physics")]
fn physics_world(scenario: Scenario) -> Result<Box<dyn TaskWorld>, SimError> {
    let world = super::physics::PhysicsWorld::new(scenario).map_err(|e| SimError::Invalid(format!("physics world: {e}")))?;
    Ok(Box::new(world))
}

#[cfg(not(feature = "physics"))]
fn physics_world(_: Scenario) -> Result<Box<dyn TaskWorld>, SimError> {
    Err(SimError::Invalid(
        "this build has no physics world: build with the cargo feature `physics` after scripts/setup.sh installed MuJoCo".into(),
    ))
}

impl TaskWorld for World {
    fn scenario(&self) -> &Scenario {
        World::scenario(self)
    }

    fn pose(&self) -> Pose {
        World::pose(self)
    }

    fn steps(&self) -> u32 {
        World::steps(self)
    }

    fn outcome(&self) -> Option<Outcome> {
        World::outcome(self)
    }

    fn step(&mut self, command: &WorldCommand) -> Option<Outcome> {
        World::step(self, command)
    }

    fn render(&mut self, size: u32, pixels: &mut Vec<u8>) -> Result<(), SimError> {
        render_into(&World::scenario(self).scene, &World::pose(self), size, size, pixels);
        Ok(())
    }
}
