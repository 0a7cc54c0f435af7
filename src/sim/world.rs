//! The task world: a kinematic quadruped on a plane among walls, coloured objects, grey obstacles
//! and bars, and the exact rules that end an episode.

use serde::Serialize;

use crate::action::{GaitFields, GaitPreset, PlanarTwist};
use crate::control::{ControlOutput, StopReason};

use super::task::{Goal, Scenario, TaskFamily};

/// Robot footprint radius, m.
pub const ROBOT_RADIUS: f32 = 0.25;
/// Height of the body top (and the camera) at zero body-height offset, m.
pub const NOMINAL_BODY_TOP: f32 = 0.42;
/// The body-height offset the legs can reach, m.
pub const BODY_OFFSET_RANGE: (f32, f32) = (-0.25, 0.05);
/// How fast the body height follows its command, m/s.
pub const BODY_RATE: f32 = 0.5;
/// Control rate of the simulator, Hz.
pub const CONTROL_RATE_HZ: f64 = 5.0;
/// Duration of one control step, s.
pub const CONTROL_PERIOD_S: f32 = 0.2;
/// Integration substep inside a control step, s.
pub const SUBSTEP_S: f32 = 0.05;
/// Reached: robot centre within this distance of an object's surface, m.
pub const REACH_DISTANCE: f32 = 0.6;
/// Stop family: moving the centre farther than this from the start fails, m.
pub const STAY_RADIUS: f32 = 0.3;
/// Wall height, m.
pub const WALL_HEIGHT: f32 = 1.0;
/// Wall thickness, m.
pub const WALL_THICKNESS: f32 = 0.1;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Ball,
    Cube,
    Cylinder,
    Cone,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Self::Ball, Self::Cube, Self::Cylinder, Self::Cone];

    /// The word used in instructions.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ball => "ball",
            Self::Cube => "cube",
            Self::Cylinder => "cylinder",
            Self::Cone => "cone",
        }
    }

    /// Footprint radius (half side for the cube), m.
    pub fn radius(self) -> f32 {
        match self {
            Self::Ball => 0.2,
            Self::Cube => 0.2,
            Self::Cylinder => 0.18,
            Self::Cone => 0.22,
        }
    }

    pub fn height(self) -> f32 {
        match self {
            Self::Ball => 0.4,
            Self::Cube => 0.4,
            Self::Cylinder => 0.5,
            Self::Cone => 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Color {
    pub const ALL: [Color; 6] = [Self::Red, Self::Green, Self::Blue, Self::Yellow, Self::Purple, Self::Orange];

    pub fn name(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Green => "green",
            Self::Blue => "blue",
            Self::Yellow => "yellow",
            Self::Purple => "purple",
            Self::Orange => "orange",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Self::Red => [210, 30, 30],
            Self::Green => [30, 170, 45],
            Self::Blue => [35, 65, 215],
            Self::Yellow => [235, 215, 30],
            Self::Purple => [140, 45, 175],
            Self::Orange => [245, 135, 20],
        }
    }
}

/// A region of the floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Footprint {
    Circle {
        x: f32,
        y: f32,
        r: f32,
    },
    /// Axis-aligned rectangle from (x0, y0) to (x1, y1).
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
    },
}

impl Footprint {
    pub fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self::Rect { x0: x0.min(x1), y0: y0.min(y1), x1: x0.max(x1), y1: y0.max(y1) }
    }

    /// Distance from a point to the footprint (0 inside).
    pub fn distance(&self, px: f32, py: f32) -> f32 {
        match *self {
            Self::Circle { x, y, r } => ((px - x).hypot(py - y) - r).max(0.0),
            Self::Rect { x0, y0, x1, y1 } => {
                let dx = (x0 - px).max(px - x1).max(0.0);
                let dy = (y0 - py).max(py - y1).max(0.0);
                dx.hypot(dy)
            }
        }
    }

    pub fn center(&self) -> (f32, f32) {
        match *self {
            Self::Circle { x, y, .. } => (x, y),
            Self::Rect { x0, y0, x1, y1 } => (0.5 * (x0 + x1), 0.5 * (y0 + y1)),
        }
    }

    /// Radius of the smallest circle about the centre that holds the footprint.
    pub fn bounding_radius(&self) -> f32 {
        match *self {
            Self::Circle { r, .. } => r,
            Self::Rect { x0, y0, x1, y1 } => 0.5 * (x1 - x0).hypot(y1 - y0),
        }
    }

    /// Whether a robot centred at (px, py) overlaps the footprint.
    pub fn touches_robot(&self, px: f32, py: f32) -> bool {
        self.distance(px, py) < ROBOT_RADIUS
    }
}

/// A coloured object an instruction can name.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Object {
    pub shape: Shape,
    pub color: Color,
    pub x: f32,
    pub y: f32,
}

impl Object {
    /// "red ball".
    pub fn name(&self) -> String {
        format!("{} {}", self.color.name(), self.shape.name())
    }

    pub fn footprint(&self) -> Footprint {
        let r = self.shape.radius();
        match self.shape {
            Shape::Cube => Footprint::rect(self.x - r, self.y - r, self.x + r, self.y + r),
            _ => Footprint::Circle { x: self.x, y: self.y, r },
        }
    }
}

/// A grey obstacle (pillar or block).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Obstacle {
    pub footprint: Footprint,
    pub height: f32,
}

/// A horizontal beam across a gap: passable only with the body top below `bottom`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bar {
    pub footprint: Footprint,
    pub bottom: f32,
    pub top: f32,
}

/// Everything on the floor. The arena spans (0, 0) to (size.0, size.1), walled all round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    pub size: (f32, f32),
    /// Arena walls and inner walls (doorways are gaps between inner walls), WALL_HEIGHT tall.
    pub walls: Vec<Footprint>,
    pub objects: Vec<Object>,
    pub obstacles: Vec<Obstacle>,
    pub bars: Vec<Bar>,
}

impl Scene {
    /// An empty walled arena.
    pub fn arena(width: f32, depth: f32) -> Self {
        let t = WALL_THICKNESS;
        let walls = vec![
            Footprint::rect(-t, -t, width + t, 0.0),
            Footprint::rect(-t, depth, width + t, depth + t),
            Footprint::rect(-t, 0.0, 0.0, depth),
            Footprint::rect(width, 0.0, width + t, depth),
        ];
        Self { size: (width, depth), walls, objects: Vec::new(), obstacles: Vec::new(), bars: Vec::new() }
    }

    /// A wall across the arena at `x` with a gap of `width` centred on `gap_y`.
    pub fn add_cross_wall(&mut self, x: f32, gap_y: f32, width: f32) {
        let h = 0.5 * WALL_THICKNESS;
        let (lo, hi) = (gap_y - 0.5 * width, gap_y + 0.5 * width);
        self.walls.push(Footprint::rect(x - h, 0.0, x + h, lo));
        self.walls.push(Footprint::rect(x - h, hi, x + h, self.size.1));
    }

    /// What a robot centred at (x, y) with the body top at `body_top` collides with, if anything.
    /// Objects count by their footprint; `skip` (the target) is ignored.
    pub fn collision(&self, x: f32, y: f32, body_top: f32, skip: Option<usize>) -> bool {
        self.walls.iter().any(|w| w.touches_robot(x, y))
            || self.obstacles.iter().any(|o| o.footprint.touches_robot(x, y))
            || self.bars.iter().any(|b| b.footprint.touches_robot(x, y) && body_top > b.bottom)
            || self.objects.iter().enumerate().any(|(i, o)| Some(i) != skip && o.footprint().touches_robot(x, y))
    }

    /// The first object whose surface is within REACH_DISTANCE of (x, y).
    pub fn reached_object(&self, x: f32, y: f32, except: Option<usize>) -> Option<usize> {
        (0..self.objects.len()).find(|&i| Some(i) != except && self.objects[i].footprint().distance(x, y) <= REACH_DISTANCE)
    }
}

/// Robot state: position (m), heading (rad, counter-clockwise from +x), body-height offset (m).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Pose {
    pub x: f32,
    pub y: f32,
    pub yaw: f32,
    pub height: f32,
}

impl Pose {
    /// Height of the body top and of the camera, m.
    pub fn body_top(&self) -> f32 {
        NOMINAL_BODY_TOP + self.height
    }
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
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Self::Reached,
        Self::Passed,
        Self::Stayed,
        Self::Terminated,
        Self::Collision,
        Self::WrongObject,
        Self::TerminatedEarly,
        Self::Timeout,
        Self::Moved,
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
    steps: u32,
    outcome: Option<Outcome>,
}

impl World {
    pub fn new(scenario: Scenario) -> Self {
        let pose = scenario.start;
        Self { height_command: pose.height, pose, scenario, steps: 0, outcome: None }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    pub fn pose(&self) -> Pose {
        self.pose
    }

    /// Control steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The verdict, once the episode has ended.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Advances one control step (CONTROL_PERIOD_S) under `command`; returns the verdict when the
    /// episode ends during it. After the end, the world no longer moves.
    pub fn step(&mut self, command: &WorldCommand) -> Option<Outcome> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let family = self.scenario.family;
        let start_time = self.steps as f32 * CONTROL_PERIOD_S;
        self.steps += 1;
        if let WorldCommand::Terminate = command {
            let reason = if family == TaskFamily::Stop { Reason::Terminated } else { Reason::TerminatedEarly };
            return self.finish(reason, true, start_time);
        }
        let (twist, gait) = match command {
            WorldCommand::Move { twist, gait } => (*twist, Some(*gait)),
            _ => (PlanarTwist::default(), None),
        };
        if let Some(g) = &gait {
            if g.body_height.is_finite() {
                self.height_command = g.body_height.clamp(BODY_OFFSET_RANGE.0, BODY_OFFSET_RANGE.1);
            }
        }
        let (vx, vy, wz) = match &gait {
            Some(g) => {
                let limit = speed_limit(g);
                let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
                let (vx, vy) = (finite(twist.x_vel), finite(twist.y_vel));
                let speed = vx.hypot(vy);
                let scale = if speed > limit { limit / speed } else { 1.0 };
                (vx * scale, vy * scale, finite(twist.yaw_vel).clamp(-limit, limit))
            }
            None => (0.0, 0.0, 0.0),
        };
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
                return self.finish(reason, false, start_time + k as f32 * SUBSTEP_S);
            }
        }
        if self.steps >= family.max_steps() {
            let reason = if family == TaskFamily::Stop { Reason::Stayed } else { Reason::Timeout };
            return self.finish(reason, false, self.steps as f32 * CONTROL_PERIOD_S);
        }
        None
    }

    fn finish(&mut self, reason: Reason, terminated: bool, time_s: f32) -> Option<Outcome> {
        self.outcome = Some(Outcome { success: reason.is_success(), reason, terminated, steps: self.steps, time_s });
        self.outcome
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
        match self.scenario.goal {
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
                let s = self.scenario.start;
                if (p.x - s.x).hypot(p.y - s.y) > STAY_RADIUS {
                    return Some(Reason::Moved);
                }
            }
        }
        None
    }
}

/// An angle in (-pi, pi].
pub fn wrap_angle(a: f32) -> f32 {
    let two_pi = std::f32::consts::TAU;
    let w = (a + std::f32::consts::PI).rem_euclid(two_pi) - std::f32::consts::PI;
    if w <= -std::f32::consts::PI {
        w + two_pi
    } else {
        w
    }
}
