//! The task world played by the Go2 in MuJoCo: a [`Scenario`]'s scene built as MJCF
//! ([`super::scene`]), the robot standing at the start pose, the world's commands turned into the
//! walking policy's (vx, vy, wz) and body height, and the verdict judged from the physics.
//!
//! One control step is [`CONTROL_PERIOD_S`] (0.2 s) of physics: 10 policy ticks of 8 physics
//! steps. The rules are checked after every tick (the kinematic world checks every 0.05 s):
//! - any contact of a robot geom with a wall, obstacle, bar or object other than the target, at
//!   any physics step: `Collision` (touching the target reaches it: `Reached`);
//! - a fall (trunk below 12 cm or tilted past 1 rad): `Fell`;
//! - then the kinematic world's goal rules on the trunk's planar position: within
//!   [`REACH_DISTANCE`] of the target's footprint `Reached` (of another object `WrongObject`),
//!   past the wall `Passed`, farther than [`STAY_RADIUS`] from the start `Moved`;
//! - at the family's step limit `Timeout` (stop: `Stayed`); the terminate action as there.
//!
//! Body height: the kinematic world's offsets, [`BODY_OFFSET_RANGE`] (-0.25 to +0.05 m), map
//! linearly onto the Go2's crouch as `go2 = 0.45 x kinematic` ([`HEIGHT_SCALE`]), 0 to -0.1125 m;
//! raising the body (offsets above 0) is not honoured. The scale keeps the bar's meaning: the
//! kinematic body top (0.42 m + offset) clears the 0.30 m bar from -0.12 m down; the Go2's top
//! (its head, about 0.355 m standing) clears it from about -0.055 m of crouch, -0.12 m mapped.
//! It also puts the experts' crouch (-0.2 m) at -0.09 m, where the Go2 walks under the bar
//! cleanly: deeper, its front knees rise into the bar in swing (-0.105 to -0.11 m touched it in
//! 7 of 12 straight runs at 0.28-0.3 m/s, -0.08 to -0.09 m in none of 24).

use std::sync::Arc;

use mujoco_rs::prelude::*;

use crate::sim::{wrap_angle, Goal, Outcome, Pose, Reason, Scenario, SimError, TaskWorld, WorldCommand, BODY_OFFSET_RANGE};

use crate::sim::world::{goal_verdict, motion, EpisodeClock};

use super::go2::{Go2, Go2Command, TICK_S};
use super::scene::{scene_mjcf, SceneGeom};
use super::{HeadCamera, PhysicsError, HEIGHT_OFFSET_RANGE};

/// Go2 crouch per metre of the kinematic world's body-height offset.
pub const HEIGHT_SCALE: f32 = 0.45;
/// Policy ticks per control step.
pub const TICKS_PER_STEP: u32 = 10;

/// The Go2 crouch (m, 0 to -0.1125) for a kinematic body-height offset (m, -0.25 to +0.05).
pub fn go2_height(offset: f32) -> f64 {
    f64::from(offset.clamp(BODY_OFFSET_RANGE.0, 0.0) * HEIGHT_SCALE).clamp(HEIGHT_OFFSET_RANGE.0, HEIGHT_OFFSET_RANGE.1)
}

/// What a contact with a geom means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touch {
    /// The floor, or another robot geom.
    Nothing,
    Robot,
    /// A wall, obstacle, bar or an object that is not the target.
    Obstacle,
    Target,
}

/// A scenario played by the Go2 in MuJoCo.
pub struct PhysicsWorld {
    scenario: Scenario,
    go2: Go2,
    camera: Option<HeadCamera>,
    /// Per geom of the model.
    touch: Vec<Touch>,
    /// The body-height offset commanded, in the kinematic world's convention.
    height_command: f32,
    /// (robot geom, scene geom) of the collision that ended the episode.
    collided: Option<[usize; 2]>,
    episode: EpisodeClock,
}

impl PhysicsWorld {
    /// The scenario's scene built in MuJoCo with the Go2 standing at its start.
    pub fn new(scenario: Scenario) -> Result<Self, PhysicsError> {
        let mjcf = scene_mjcf(&scenario.scene);
        let mut go2 = Go2::with_scene_assets(&mjcf.assets, &mjcf.worldbody)?;
        let start = scenario.start;
        go2.reset(f64::from(start.x), f64::from(start.y), f64::from(start.yaw));
        let touch = touch_map(go2.model(), &scenario)?;
        Ok(Self {
            height_command: start.height,
            scenario,
            go2,
            camera: None,
            touch,
            collided: None,
            episode: EpisodeClock::default(),
        })
    }

    pub fn go2(&self) -> &Go2 {
        &self.go2
    }

    pub fn go2_mut(&mut self) -> &mut Go2 {
        &mut self.go2
    }

    /// What collided, when a collision ended the episode: the robot's body and the scene geom.
    pub fn collision(&self) -> Option<(String, String)> {
        let model = self.go2.model();
        self.collided.map(|[robot, scene]| {
            let body = model.geom_bodyid()[robot] as usize;
            let name = |kind, id| model.id_to_name(kind, id).unwrap_or("?").to_owned();
            (name(MjtObjBase::mjOBJ_BODY, body), name(MjtObjBase::mjOBJ_GEOM, scene))
        })
    }

    /// The Go2 command for a world command (after the kinematic world's speed limit).
    fn go2_command(&mut self, command: &WorldCommand) -> Go2Command {
        let (vx, vy, wz) = motion(command, &mut self.height_command);
        // Pitch as the gait command gives it (REP 103: positive is nose down); standing, level.
        let pitch = match command {
            WorldCommand::Move { gait, .. } => f64::from(gait.pitch),
            _ => 0.0,
        };
        Go2Command {
            velocity: [f64::from(vx), f64::from(vy), f64::from(wz)],
            height_offset: go2_height(self.height_command),
            pitch,
        }
    }

    /// The rules after a tick; `contact` is the worst contact seen during it.
    fn judge(&self, contact: Touch) -> Option<Reason> {
        match contact {
            Touch::Obstacle => return Some(Reason::Collision),
            Touch::Target => return Some(Reason::Reached),
            Touch::Nothing | Touch::Robot => {}
        }
        if self.go2.fallen() {
            return Some(Reason::Fell);
        }
        goal_verdict(&self.scenario, &self.pose())
    }
}

/// What touching each geom of `model` means in `scenario`.
fn touch_map(model: &MjModel, scenario: &Scenario) -> Result<Vec<Touch>, PhysicsError> {
    let ngeom = model.ffi().ngeom as usize;
    let base =
        model.name_to_id(MjtObjBase::mjOBJ_BODY, "base").ok_or_else(|| PhysicsError::Invalid("go2.xml: no body base".into()))?;
    let mut touch: Vec<Touch> = (0..ngeom)
        .map(|g| {
            let body = model.geom_bodyid()[g] as usize;
            if model.body_rootid()[body] as usize == base {
                Touch::Robot
            } else {
                Touch::Nothing
            }
        })
        .collect();
    let target = match scenario.goal {
        Goal::Reach { object } => Some(object),
        _ => None,
    };
    for geom in SceneGeom::all(&scenario.scene) {
        let name = geom.name();
        let id = model
            .name_to_id(MjtObjBase::mjOBJ_GEOM, &name)
            .ok_or_else(|| PhysicsError::Invalid(format!("the scene's geom {name} is not in the model")))?;
        touch[id] = if matches!(geom, SceneGeom::Object(i) if Some(i) == target) { Touch::Target } else { Touch::Obstacle };
    }
    Ok(touch)
}

/// The worst contact in `data` between a robot geom and a scene geom (an obstacle over the
/// target), with the (robot, scene) geoms of an obstacle's.
fn worst_contact(data: &MjData<Arc<MjModel>>, touch: &[Touch]) -> (Touch, Option<[usize; 2]>) {
    let mut worst = Touch::Nothing;
    for c in data.contact() {
        let ids = c.geom.map(|g| usize::try_from(g).unwrap_or(usize::MAX));
        let kinds = ids.map(|g| touch.get(g).copied().unwrap_or(Touch::Nothing));
        let (other, pair) = match kinds {
            [Touch::Robot, other] => (other, [ids[0], ids[1]]),
            [other, Touch::Robot] => (other, [ids[1], ids[0]]),
            _ => continue,
        };
        match other {
            Touch::Obstacle => return (Touch::Obstacle, Some(pair)),
            Touch::Target => worst = Touch::Target,
            Touch::Nothing | Touch::Robot => {}
        }
    }
    (worst, None)
}

impl TaskWorld for PhysicsWorld {
    fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The trunk's planar position and heading, and the body-height offset in force mapped back
    /// to the kinematic world's convention.
    fn pose(&self) -> Pose {
        let [x, y, _] = self.go2.position();
        Pose {
            x: x as f32,
            y: y as f32,
            yaw: wrap_angle(self.go2.heading() as f32),
            height: self.go2.height_offset() as f32 / HEIGHT_SCALE,
        }
    }

    fn steps(&self) -> u32 {
        self.episode.steps
    }

    fn outcome(&self) -> Option<Outcome> {
        self.episode.outcome
    }

    fn step(&mut self, command: &WorldCommand) -> Option<Outcome> {
        let family = self.scenario.family;
        let start_time = match self.episode.begin(family, command) {
            Ok(start_time) => start_time,
            Err(verdict) => return verdict,
        };
        let go2_command = self.go2_command(command);
        for k in 1..=TICKS_PER_STEP {
            let mut contact = Touch::Nothing;
            let (touch, collided) = (&self.touch, &mut self.collided);
            let ticked = self.go2.tick_observed(go2_command, &mut |data| {
                if contact != Touch::Obstacle {
                    let (worst, pair) = worst_contact(data, touch);
                    if worst != Touch::Nothing {
                        contact = worst;
                        *collided = pair;
                    }
                }
            });
            // The MLP's forward pass on a fixed-size finite input has no failure of its own: an
            // error here is a broken build, not an outcome.
            if let Err(e) = ticked {
                panic!("the walking policy failed: {e}");
            }
            let time_s = start_time + k as f32 * TICK_S as f32;
            if let Some(reason) = self.judge(contact) {
                return self.episode.finish(reason, false, time_s);
            }
        }
        self.episode.end_step(family)
    }

    fn render(&mut self, size: u32, pixels: &mut Vec<u8>) -> Result<(), SimError> {
        let size = size as usize;
        if self.camera.as_ref().is_none_or(|c| c.size() != (size, size)) {
            self.camera = Some(HeadCamera::new(&self.go2, size, size).map_err(physics_error)?);
        }
        let camera = self.camera.as_mut().expect("made above");
        *pixels = camera.render(&mut self.go2).map_err(physics_error)?;
        Ok(())
    }
}

fn physics_error(e: PhysicsError) -> SimError {
    SimError::Invalid(format!("physics world: {e}"))
}
