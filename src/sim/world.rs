//! The task world: a kinematic quadruped on a plane among walls, coloured objects, grey obstacles
//! and bars, and the exact rules that end an episode.

use serde::Serialize;

use crate::action::{GaitFields, GaitPreset, PlanarTwist};
use crate::control::{ControlOutput, StopReason};

use super::scene::{wrap_angle, Pose, REACH_DISTANCE, ROBOT_RADIUS, WALL_THICKNESS};
use super::task::{Goal, Scenario, TaskFamily};

/// The body-height offset the legs can reach, m.
pub const BODY_OFFSET_RANGE: (f32, f32) = (-0.25, 0.05);
/// How fast the body height follows its command, m/s.
pub const BODY_RATE: f32 = 0.5;
/// Duration of one control step, ns: the simulator's one definition of its period. The world
/// moves one step per period, the camera renders a frame per step, `moe_vla collect` stamps its
/// frames one period apart, and `moe_vla train` records it as the frame period of a model trained
/// on such bags (the presets' `DEFAULT_FRAME_PERIOD_S`, which a test holds equal).
pub const CONTROL_PERIOD_NS: u64 = 200_000_000;
/// Duration of one control step, s: `0.2_f32` exactly, as 2e8 and 1e9 are both exact in f32.
pub const CONTROL_PERIOD_S: f32 = CONTROL_PERIOD_NS as f32 / 1e9;
/// Control rate of the simulator, Hz.
pub const CONTROL_RATE_HZ: f64 = 1e9 / CONTROL_PERIOD_NS as f64;
/// Integration substep inside a control step, s.
pub const SUBSTEP_S: f32 = 0.05;
/// Stop family: moving the centre farther than this from the start fails, m.
pub const STAY_RADIUS: f32 = 0.3;
/// Speed per Hz of step frequency at gait factor 1 (trot), m/s (and rad/s for yaw).
pub const SPEED_PER_HZ: f32 = 0.35;

/// How fast a gait can go, relative to trot.
pub fn gait_speed_factor(gait: GaitPreset) -> f32 {
    match gait {
        GaitPreset::Trot => 1.0,
        GaitPreset::Bound => 0.9,
        GaitPreset::Pace => 0.8,
        GaitPreset::Pronk => 0.6,
    }
}

/// Largest planar speed (m/s) and yaw rate (rad/s) for a gait command.
pub fn speed_limit(gait: &GaitFields) -> f32 {
    let freq = if gait.step_frequency.is_finite() { gait.step_frequency.clamp(0.0, 4.0) } else { 0.0 };
    gait_speed_factor(GaitPreset::nearest(gait.phase_offsets)) * freq * SPEED_PER_HZ
}

/// What the world is told to do for one control step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WorldCommand {
    Move {
        twist: PlanarTwist,
        gait: GaitFields,
    },
    /// Stand still (the controller is stopping for another reason than terminate).
    Stand,
    /// The terminate action: the episode ends now.
    Terminate,
}

impl WorldCommand {
    /// What a controller output means to the robot: a terminate hold is the terminate action.
    pub fn from_control(out: &ControlOutput) -> Self {
        match &out.stop {
            Some(StopReason::Terminated) => Self::Terminate,
            None => Self::Move { twist: out.twist, gait: out.gait },
            Some(_) => Self::Stand,
        }
    }
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Success: the target object was reached.
    Reached,
    /// Success: fully past the doorway or bar.
    Passed,
    /// Success (stop): stayed in place until the limit.
    Stayed,
    /// Success (stop): the terminate action.
    Terminated,
    Collision,
    WrongObject,
    TerminatedEarly,
    Timeout,
    /// Stop family: moved away from the start.
    Moved,
    /// The physics world's robot fell (the kinematic world's never does).
    Fell,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Self::Reached,
        Self::Passed,
        Self::Stayed,
        Self::Terminated,
        Self::Collision,
        Self::WrongObject,
        Self::TerminatedEarly,
        Self::Timeout,
        Self::Moved,
        Self::Fell,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reached => "reached",
            Self::Passed => "passed",
            Self::Stayed => "stayed",
            Self::Terminated => "terminated",
            Self::Collision => "collision",
            Self::WrongObject => "wrong_object",
            Self::TerminatedEarly => "terminated_early",
            Self::Timeout => "timeout",
            Self::Moved => "moved",
            Self::Fell => "fell",
        }
    }

    pub fn is_success(self) -> bool {
        matches!(self, Self::Reached | Self::Passed | Self::Stayed | Self::Terminated)
    }
}

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    pub success: bool,
    pub reason: Reason,
    /// Ended by the terminate action.
    pub terminated: bool,
    /// Control steps taken, the final one included.
    pub steps: u32,
    /// Time from the start to the end, s.
    pub time_s: f32,
}

/// A scenario being played: pose, body height command, step count and the verdict.
#[derive(Debug, Clone)]
pub struct World {
    scenario: Scenario,
    pose: Pose,
    height_command: f32,
    episode: EpisodeClock,
}

impl World {
    pub fn new(scenario: Scenario) -> Self {
        let pose = scenario.start;
        Self { height_command: pose.height, pose, scenario, episode: EpisodeClock::default() }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    pub fn pose(&self) -> Pose {
        self.pose
    }

    /// Control steps taken so far.
    pub fn steps(&self) -> u32 {
        self.episode.steps
    }

    /// The verdict, once the episode has ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.episode.outcome
    }

    /// Advances one control step (CONTROL_PERIOD_S) under `command`; returns the verdict when the
    /// episode ends during it. After the end, the world no longer moves.
    pub fn step(&mut self, command: &WorldCommand) -> Option<Outcome> {
        let family = self.scenario.family;
        let start_time = match self.episode.begin(family, command) {
            Ok(start_time) => start_time,
            Err(verdict) => return verdict,
        };
        let (vx, vy, wz) = motion(command, &mut self.height_command);
        let substeps = (CONTROL_PERIOD_S / SUBSTEP_S).round() as u32;
        for k in 1..=substeps {
            let p = &mut self.pose;
            let mid_yaw = p.yaw + 0.5 * wz * SUBSTEP_S;
            let (s, c) = mid_yaw.sin_cos();
            p.x += (vx * c - vy * s) * SUBSTEP_S;
            p.y += (vx * s + vy * c) * SUBSTEP_S;
            p.yaw = wrap_angle(p.yaw + wz * SUBSTEP_S);
            let dh = (self.height_command - p.height).clamp(-BODY_RATE * SUBSTEP_S, BODY_RATE * SUBSTEP_S);
            p.height = (p.height + dh).clamp(BODY_OFFSET_RANGE.0, BODY_OFFSET_RANGE.1);
            if let Some(reason) = self.judge() {
                return self.episode.finish(reason, false, start_time + k as f32 * SUBSTEP_S);
            }
        }
        self.episode.end_step(family)
    }

    /// The rules, checked after every substep.
    fn judge(&self) -> Option<Reason> {
        let p = self.pose;
        let scene = &self.scenario.scene;
        let target = match self.scenario.goal {
            Goal::Reach { object } => Some(object),
            _ => None,
        };
        if scene.collision(p.x, p.y, p.body_top(), target) {
            return Some(Reason::Collision);
        }
        goal_verdict(&self.scenario, &p)
    }
}

/// What a command asks of the robot, as both worlds read it: (vx, vy, wz) after the gait's speed
/// limit (planar speed scaled, yaw rate clamped; a non-finite value reads as 0; anything but a
/// move is a standstill). A move's finite body height (clamped to `BODY_OFFSET_RANGE`) replaces
/// `height_command`, which otherwise holds.
pub(super) fn motion(command: &WorldCommand, height_command: &mut f32) -> (f32, f32, f32) {
    let (twist, gait) = match command {
        WorldCommand::Move { twist, gait } => (*twist, Some(*gait)),
        _ => (PlanarTwist::default(), None),
    };
    if let Some(g) = gait.as_ref().filter(|g| g.body_height.is_finite()) {
        *height_command = g.body_height.clamp(BODY_OFFSET_RANGE.0, BODY_OFFSET_RANGE.1);
    }
    match &gait {
        Some(g) => {
            let limit = speed_limit(g);
            let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
            let (vx, vy) = (finite(twist.x_vel), finite(twist.y_vel));
            let speed = vx.hypot(vy);
            let scale = if speed > limit { limit / speed } else { 1.0 };
            (vx * scale, vy * scale, finite(twist.yaw_vel).clamp(-limit, limit))
        }
        None => (0.0, 0.0, 0.0),
    }
}

/// An episode's step count and verdict, with the rules of time both worlds share: a terminate
/// ends the episode at once, the family's step limit at the latest; after the end nothing moves.
#[derive(Debug, Clone, Default)]
pub(super) struct EpisodeClock {
    pub steps: u32,
    pub outcome: Option<Outcome>,
}

impl EpisodeClock {
    /// Begins a control step under `command`: its start time, or (`Err`) the verdict when the
    /// episode has ended or the command terminates it.
    pub fn begin(&mut self, family: TaskFamily, command: &WorldCommand) -> Result<f32, Option<Outcome>> {
        if self.outcome.is_some() {
            return Err(self.outcome);
        }
        let start_time = self.steps as f32 * CONTROL_PERIOD_S;
        self.steps += 1;
        if let WorldCommand::Terminate = command {
            let reason = if family == TaskFamily::Stop { Reason::Terminated } else { Reason::TerminatedEarly };
            return Err(self.finish(reason, true, start_time));
        }
        Ok(start_time)
    }

    /// Ends a control step that nothing else ended: the family's step limit.
    pub fn end_step(&mut self, family: TaskFamily) -> Option<Outcome> {
        if self.steps < family.max_steps() {
            return None;
        }
        let reason = if family == TaskFamily::Stop { Reason::Stayed } else { Reason::Timeout };
        self.finish(reason, false, self.steps as f32 * CONTROL_PERIOD_S)
    }

    pub fn finish(&mut self, reason: Reason, terminated: bool, time_s: f32) -> Option<Outcome> {
        self.outcome = Some(Outcome { success: reason.is_success(), reason, terminated, steps: self.steps, time_s });
        self.outcome
    }
}

/// The rules of the goal, given the robot's pose: reached (or the wrong object), passed, moved
/// off while told to stop; both worlds judge by them.
pub(super) fn goal_verdict(scenario: &Scenario, p: &Pose) -> Option<Reason> {
    let scene = &scenario.scene;
    match scenario.goal {
        Goal::Reach { object } => {
            if scene.objects.get(object).is_some_and(|o| o.footprint().distance(p.x, p.y) <= REACH_DISTANCE) {
                return Some(Reason::Reached);
            }
            if scene.reached_object(p.x, p.y, Some(object)).is_some() {
                return Some(Reason::WrongObject);
            }
        }
        Goal::Pass { wall_x, .. } => {
            if p.x > wall_x + 0.5 * WALL_THICKNESS + ROBOT_RADIUS {
                return Some(Reason::Passed);
            }
        }
        Goal::Stay => {
            let s = scenario.start;
            if (p.x - s.x).hypot(p.y - s.y) > STAY_RADIUS {
                return Some(Reason::Moved);
            }
        }
    }
    None
}
