//! Scripted experts with privileged state: waypoints (beside an obstacle, in front of a doorway or
//! bar, then through it), proportional heading control, trot at 3 Hz. Each episode draws a
//! quality: action noise, occasional random actions, a style and, in the original design with
//! overall probability ~40 %, a deliberate failure mode. The world, not the expert, decides the
//! label.
//!
//! Two data designs: `Original` (one clean route per scene with noise, failures that mostly go
//! wrong from the first step) and `Mixed` (issue 37: few clean routes; many sub-optimal ones that
//! hold useful parts: risky shortcuts that succeed faster about half the time, hesitant successes,
//! failures that begin like successes), so that copying the successful episodes is not the same
//! as copying the clean expert.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::action::{ActionSpace, GaitFields, PlanarTwist};
use crate::control::NEUTRAL_GAIT;
use crate::policy::{Decision, PolicyError};

use super::driver::{output, random_bins, Driver, Observation};
use super::scene::{wrap_angle, Scene, ROBOT_RADIUS};
use super::task::{Goal, Scenario, TaskFamily, ARENA};
use super::worlds::TaskWorld;

/// Probability that an episode's expert has a failure mode.
pub const FAILURE_PROBABILITY: f64 = 0.4;
/// Body-height offset the expert crouches to under a bar, m.
pub const CROUCH_HEIGHT: f32 = -0.2;

/// A deliberate way to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Goes to another object than the named one.
    Distractor,
    /// Never lowers the body (crawl).
    ForgetCrouch,
    /// Straight at the goal, ignoring the obstacle or the doorway.
    StraightLine,
    /// Terminates at this step.
    TerminateEarly { step: u32 },
    /// Far too slow: times out.
    TooSlow,
    /// Heads for random points.
    Wander,
}

impl FailureMode {
    /// The modes that make sense in `family` (for `scenario`'s scene).
    pub fn options(scenario: &Scenario, rng: &mut StdRng) -> Vec<FailureMode> {
        let early = FailureMode::TerminateEarly { step: rng.random_range(1..12) };
        match scenario.family {
            TaskFamily::GoTo | TaskFamily::Distinguish => {
                let mut v = vec![early, Self::TooSlow, Self::Wander];
                if scenario.scene.objects.len() > 1 {
                    v.extend([Self::Distractor, Self::Distractor]);
                }
                v
            }
            TaskFamily::GoAvoid => vec![Self::StraightLine, Self::StraightLine, early, Self::TooSlow, Self::Wander],
            TaskFamily::GoThrough => vec![Self::StraightLine, Self::StraightLine, early, Self::TooSlow, Self::Wander],
            TaskFamily::Crawl => vec![Self::ForgetCrouch, Self::ForgetCrouch, early, Self::TooSlow, Self::Wander],
            TaskFamily::Stop => vec![Self::Wander],
        }
    }
}

/// How an expert goes about its task in one episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum Style {
    /// The scripted route.
    Clean,
    /// Faster and riskier: skims obstacles with `margin` m to spare (can be negative), heads
    /// straight for a doorway instead of lining up, starts to crouch only `margin` m before a bar,
    /// takes the nearest object for the named one.
    Shortcut { margin: f32 },
    /// The scripted route slowly, with pauses: succeeds, late.
    Hesitant,
    /// The scripted route until `at` of the way (0..1), then a mistake: away from the target,
    /// into the doorway's wall, standing up under the bar, walking off while told to stop.
    LateFailure { at: f32 },
}

/// A style's name, for reports and `moe_vla eval --style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StyleKind {
    Clean,
    Shortcut,
    Hesitant,
    LateFailure,
}

impl Style {
    pub fn kind(self) -> StyleKind {
        match self {
            Self::Clean => StyleKind::Clean,
            Self::Shortcut { .. } => StyleKind::Shortcut,
            Self::Hesitant => StyleKind::Hesitant,
            Self::LateFailure { .. } => StyleKind::LateFailure,
        }
    }

    /// A style of `kind` with its parameters drawn from `rng`.
    pub fn sample(kind: StyleKind, rng: &mut StdRng) -> Self {
        match kind {
            StyleKind::Clean => Self::Clean,
            StyleKind::Shortcut => Self::Shortcut { margin: rng.random_range(SHORTCUT_MARGIN.0..SHORTCUT_MARGIN.1) },
            StyleKind::Hesitant => Self::Hesitant,
            StyleKind::LateFailure => Self::LateFailure { at: rng.random_range(0.45..0.8) },
        }
    }
}

/// The data an expert population produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataDesign {
    /// One clean route per scene with speed variation and noise; 40 % deliberate failures that
    /// mostly go wrong from the first step (the data of the shipped models).
    #[default]
    Original,
    /// Few clean routes; shortcuts, hesitant successes and late failures (`MIXED_STYLES`).
    Mixed,
}

/// The mixed design's styles and their shares; the rest (10 %) are the original failure modes.
pub const MIXED_STYLES: [(StyleKind, f64); 4] =
    [(StyleKind::Clean, 0.05), (StyleKind::Shortcut, 0.45), (StyleKind::Hesitant, 0.20), (StyleKind::LateFailure, 0.20)];

/// A shortcut's spare margin, m: drawn so that about half of the shortcuts collide.
const SHORTCUT_MARGIN: (f32, f32) = (-0.45, 0.2);

/// How well an expert behaves in one episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExpertQuality {
    /// Standard deviation of Gaussian noise on the velocity commands (m/s, rad/s).
    pub noise: f32,
    /// Probability per step of a uniformly random command instead.
    pub random_action: f32,
    /// Cruise speed, m/s.
    pub cruise: f32,
    pub failure: Option<FailureMode>,
    /// Stop family: terminate at once rather than stand still.
    pub terminate_on_stop: bool,
    pub style: Style,
    pub detour: DetourSide,
}

/// Which side of an obstacle on its route an expert passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetourSide {
    /// Away from the obstacle's offset from the straight line: the shorter way round, but which
    /// way that is can turn on a few centimetres, a few pixels in the camera.
    #[default]
    Away,
    /// Always left, unless a wall or another thing stands there: a convention a camera policy
    /// can follow without judging the offset.
    Left,
}

impl ExpertQuality {
    /// A noiseless expert that does its best.
    pub fn clean() -> Self {
        Self {
            noise: 0.0,
            random_action: 0.0,
            cruise: 0.7,
            failure: None,
            terminate_on_stop: false,
            style: Style::Clean,
            detour: DetourSide::Away,
        }
    }

    /// A noiseless expert of style `kind`, its parameters drawn from `rng` (scoring a style alone).
    pub fn styled(kind: StyleKind, rng: &mut StdRng) -> Self {
        let style = Style::sample(kind, rng);
        Self { style, ..Self::clean() }.with_style_speed(rng)
    }

    /// Shortcuts hurry; hesitant experts crawl along.
    fn with_style_speed(mut self, rng: &mut StdRng) -> Self {
        match self.style {
            Style::Shortcut { .. } => self.cruise = rng.random_range(0.85..1.0),
            Style::Hesitant => self.cruise = rng.random_range(0.22..0.35),
            Style::Clean | Style::LateFailure { .. } => {}
        }
        self
    }

    /// The quality of one episode's expert in the mixed design.
    pub fn sample_mixed(scenario: &Scenario, rng: &mut StdRng) -> Self {
        let noise = rng.random_range(0.0..0.08);
        let random_action = if rng.random_bool(0.5) { rng.random_range(0.0..0.05) } else { 0.0 };
        let cruise = rng.random_range(0.6..0.8);
        let terminate_on_stop = rng.random_bool(0.5);
        let options = FailureMode::options(scenario, rng);
        let mut pick = rng.random::<f64>();
        let mut quality = Self {
            noise,
            random_action,
            cruise,
            failure: None,
            terminate_on_stop,
            style: Style::Clean,
            detour: DetourSide::Away,
        };
        for (kind, share) in MIXED_STYLES {
            if pick < share {
                quality.style = Style::sample(kind, rng);
                return quality.with_style_speed(rng);
            }
            pick -= share;
        }
        quality.failure = Some(options[rng.random_range(0..options.len())]);
        quality
    }

    /// The quality of one episode's expert.
    pub fn sample(scenario: &Scenario, rng: &mut StdRng) -> Self {
        let noise = rng.random_range(0.0..0.15);
        let random_action = if rng.random_bool(0.5) { rng.random_range(0.0..0.1) } else { 0.0 };
        let cruise = rng.random_range(0.5..0.85);
        let terminate_on_stop = rng.random_bool(0.5);
        let options = FailureMode::options(scenario, rng);
        let failure = rng.random_bool(FAILURE_PROBABILITY).then(|| options[rng.random_range(0..options.len())]);
        Self { noise, random_action, cruise, failure, terminate_on_stop, style: Style::Clean, detour: DetourSide::Away }
    }
}

/// A scripted driver for one scenario.
pub struct Expert {
    space: ActionSpace,
    quality: ExpertQuality,
    rng: StdRng,
    /// Points to visit in order; the last is the goal.
    waypoints: Vec<(f32, f32)>,
    next: usize,
    /// Pass tasks: the gap's lane (y) and the wall's x, followed after the approach point.
    lane: Option<(f32, f32)>,
    crouch_from_x: Option<f32>,
    steps: u32,
    /// Hesitant: control steps left standing still.
    pause: u32,
    /// Late failure: the distance to the goal at the start, and whether the mistake began.
    start_distance: Option<f32>,
    failing: bool,
}

impl Expert {
    /// An expert of the given quality; `seed` drives its noise and random actions.
    pub fn new(scenario: &Scenario, space: ActionSpace, quality: ExpertQuality, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = (scenario.start.x, scenario.start.y);
        let straight = quality.failure == Some(FailureMode::StraightLine);
        let shortcut = match quality.style {
            Style::Shortcut { margin } => Some(margin),
            _ => None,
        };
        let mut lane = None;
        let mut crouch_from_x = None;
        let waypoints = match scenario.goal {
            Goal::Reach { object } => {
                let objects = &scenario.scene.objects;
                let mut target = object;
                if quality.failure == Some(FailureMode::Distractor) && objects.len() > 1 {
                    let others: Vec<usize> = (0..objects.len()).filter(|&i| i != object).collect();
                    target = others[rng.random_range(0..others.len())];
                }
                if shortcut.is_some() && objects.len() > 1 {
                    // No looking closely: the nearest object ahead.
                    let ahead = |o: &super::scene::Object| (o.x - start.0).hypot(o.y - start.1);
                    target =
                        (0..objects.len()).min_by(|&a, &b| ahead(&objects[a]).total_cmp(&ahead(&objects[b]))).unwrap_or(object);
                }
                let goal = objects.get(target).map_or(start, |o| (o.x, o.y));
                let mut points = Vec::new();
                if !straight {
                    for (i, obstacle) in scenario.scene.obstacles.iter().enumerate() {
                        let c = obstacle.footprint.center();
                        if super::task::segment_distance(c, start, goal) < 0.9 {
                            let spare = shortcut.unwrap_or(CLEARANCE);
                            let size = obstacle.footprint.bounding_radius();
                            let point = |side| beside(start, goal, c, size, spare, side);
                            let side = match quality.detour {
                                DetourSide::Away => away_side(start, goal, c),
                                // Left, unless a wall or something else stands there.
                                DetourSide::Left if has_room(&scenario.scene, point(1.0), i, target) => 1.0,
                                DetourSide::Left => -1.0,
                            };
                            points.push(point(side));
                        }
                    }
                }
                points.push(goal);
                points
            }
            Goal::Pass { wall_x, gap_y } => {
                if quality.failure != Some(FailureMode::ForgetCrouch) && !scenario.scene.bars.is_empty() {
                    // A shortcut crouches at the last moment (the body needs 0.4 s to get down).
                    crouch_from_x = Some(wall_x - shortcut.map_or(1.4, |margin| 0.75 + margin));
                }
                if let Some(margin) = shortcut.filter(|_| scenario.scene.bars.is_empty()) {
                    // Straight for the far side of the doorway, without lining up first, aimed
                    // off its centre by up to 0.6 m.
                    let side = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                    vec![(wall_x + 1.5, gap_y + side * (0.25 - margin))]
                } else if straight {
                    let yaw = scenario.start.yaw;
                    let d = (wall_x + 1.5 - start.0).max(0.5);
                    vec![(start.0 + d, start.1 + d * yaw.tan().clamp(-1.0, 1.0))]
                } else {
                    lane = Some((gap_y, wall_x));
                    vec![(wall_x - 0.9, gap_y), (wall_x + 1.5, gap_y)]
                }
            }
            Goal::Stay => vec![start],
        };
        Self {
            space,
            quality,
            rng,
            waypoints,
            next: 0,
            lane,
            crouch_from_x,
            steps: 0,
            pause: 0,
            start_distance: None,
            failing: false,
        }
    }

    /// An expert of `design` whose quality is drawn from `rng`, passing obstacles on `detour`.
    pub fn sampled(scenario: &Scenario, space: ActionSpace, design: DataDesign, detour: DetourSide, rng: &mut StdRng) -> Self {
        let quality = match design {
            DataDesign::Original => ExpertQuality::sample(scenario, rng),
            DataDesign::Mixed => ExpertQuality::sample_mixed(scenario, rng),
        };
        let quality = ExpertQuality { detour, ..quality };
        let seed = rng.random();
        Self::new(scenario, space, quality, seed)
    }

    pub fn quality(&self) -> &ExpertQuality {
        &self.quality
    }

    /// The points the route visits, the goal last.
    #[cfg(test)]
    pub(super) fn waypoints(&self) -> &[(f32, f32)] {
        &self.waypoints
    }

    /// The physical command for this step: (terminate, x_vel, y_vel, yaw_vel, body_height).
    fn command(&mut self, world: &dyn TaskWorld) -> (bool, f32, f32, f32, f32) {
        let pose = world.pose();
        let family = world.scenario().family;
        let step = self.steps;
        self.steps += 1;
        match self.quality.failure {
            Some(FailureMode::TerminateEarly { step: at }) if step >= at => return (true, 0.0, 0.0, 0.0, 0.0),
            Some(FailureMode::Wander) if step.is_multiple_of(10) => {
                let p = (self.rng.random_range(0.5..ARENA.0 - 0.5), self.rng.random_range(0.5..ARENA.1 - 0.5));
                self.waypoints = vec![p];
                self.next = 0;
            }
            _ => {}
        }
        if family == TaskFamily::Stop && self.quality.failure.is_none() {
            return match self.quality.style {
                // Told to stop, it waits a while, then walks off.
                Style::LateFailure { at } if step as f32 >= 0.75 * at * family.max_steps() as f32 => {
                    (false, self.quality.cruise, 0.0, 0.0, 0.0)
                }
                Style::LateFailure { .. } => (false, 0.0, 0.0, 0.0, 0.0),
                _ => (self.quality.terminate_on_stop, 0.0, 0.0, 0.0, 0.0),
            };
        }
        if self.quality.style == Style::Hesitant {
            if self.pause > 0 {
                self.pause -= 1;
                let crouch = self.crouch_from_x.is_some_and(|x| pose.x > x);
                return (false, 0.0, 0.0, 0.0, if crouch { CROUCH_HEIGHT } else { 0.0 });
            }
            if self.rng.random_bool(0.12) {
                self.pause = self.rng.random_range(1..4);
            }
        }
        if let Style::LateFailure { at } = self.quality.style {
            self.late_failure(at, pose, world.scenario());
        }
        while self.next + 1 < self.waypoints.len() {
            let (wx, wy) = self.waypoints[self.next];
            if (wx - pose.x).hypot(wy - pose.y) > 0.3 {
                break;
            }
            self.next += 1;
        }
        let mut aim = self.waypoints.get(self.next).copied().unwrap_or((pose.x, pose.y));
        if let Some((gap_y, wall_x)) = self.lane {
            // After the approach point, pursue a point ahead on the lane through the gap.
            if self.next > 0 || pose.x > wall_x - 0.9 - 0.3 {
                aim = (pose.x.max(wall_x - 1.2) + 0.8, gap_y);
            }
        }
        let error = wrap_angle((aim.1 - pose.y).atan2(aim.0 - pose.x) - pose.yaw);
        let cruise = if self.quality.failure == Some(FailureMode::TooSlow) { 0.06 } else { self.quality.cruise };
        let x_vel = cruise * error.cos().max(0.0).powi(3);
        let yaw_vel = (2.0 * error).clamp(-1.0, 1.0);
        let crouch = self.crouch_from_x.is_some_and(|x| pose.x > x);
        (false, x_vel, 0.0, yaw_vel, if crouch { CROUCH_HEIGHT } else { 0.0 })
    }

    /// Late failure: once `at` of the way to the goal is behind, the mistake begins.
    fn late_failure(&mut self, at: f32, pose: super::scene::Pose, scenario: &Scenario) {
        // Pass tasks measure the way to the point in front of the wall, so the mistake comes
        // before the doorway or bar, not after it.
        let goal = match scenario.goal {
            Goal::Pass { wall_x, gap_y } => (wall_x - 0.9, gap_y),
            _ => match self.waypoints.last() {
                Some(&goal) => goal,
                None => return,
            },
        };
        let distance = (goal.0 - pose.x).hypot(goal.1 - pose.y);
        let start = *self.start_distance.get_or_insert(distance);
        if self.failing || distance > (1.0 - at) * start {
            return;
        }
        self.failing = true;
        match scenario.goal {
            Goal::Reach { .. } => {
                // Loses the target: turns off to the side.
                let side = if self.rng.random_bool(0.5) { 1.0 } else { -1.0 };
                let bearing = pose.yaw + side * self.rng.random_range(1.2..2.0);
                let point = (pose.x + 3.0 * bearing.cos(), pose.y + 3.0 * bearing.sin());
                self.waypoints = vec![(point.0.clamp(0.5, ARENA.0 - 0.5), point.1.clamp(0.5, ARENA.1 - 0.5))];
                self.next = 0;
            }
            Goal::Pass { wall_x, gap_y } if scenario.scene.bars.is_empty() => {
                // Misjudges the doorway: into the wall beside it.
                let side = if self.rng.random_bool(0.5) { 1.0 } else { -1.0 };
                self.waypoints = vec![(wall_x + 0.5, gap_y + side * 1.3)];
                self.next = 0;
                self.lane = None;
            }
            Goal::Pass { .. } => self.crouch_from_x = None, // stands up under the bar
            Goal::Stay => {}
        }
    }

    /// The bins of a command: the planar twist jittered by the expert's noise (not a terminate),
    /// the neutral gait at body height `body`.
    fn bins(&mut self, terminate: bool, x: f32, y: f32, yaw: f32, body: f32) -> Vec<u32> {
        let noise = self.quality.noise;
        let mut jitter = |v: f32| v + noise * self.rng.sample::<f32, _>(StandardNormal);
        let (x_vel, y_vel, yaw_vel) = if terminate { (x, y, yaw) } else { (jitter(x), jitter(y), jitter(yaw)) };
        let gait = GaitFields { body_height: body, ..NEUTRAL_GAIT };
        self.space.encode_command(terminate, PlanarTwist { x_vel, y_vel, yaw_vel }, gait)
    }
}

/// Room the scripted route leaves beside an obstacle, m.
const CLEARANCE: f32 = 0.45;

/// +1 to pass an obstacle centred at `c` on the left of the line start-goal, -1 on the right:
/// the side away from its offset (the shorter way round).
fn away_side(start: (f32, f32), goal: (f32, f32), c: (f32, f32)) -> f32 {
    let (dx, dy) = (goal.0 - start.0, goal.1 - start.1);
    let offset = (c.0 - start.0) * -dy + (c.1 - start.1) * dx;
    if offset > 0.0 {
        -1.0
    } else {
        1.0
    }
}

/// A point beside obstacle centre `c` (of half-size `size`), off the line start-goal on `side`
/// (+1 left, -1 right), `spare` m clear of it.
fn beside(start: (f32, f32), goal: (f32, f32), c: (f32, f32), size: f32, spare: f32, side: f32) -> (f32, f32) {
    let (dx, dy) = (goal.0 - start.0, goal.1 - start.1);
    let len = dx.hypot(dy).max(1e-6);
    let (nx, ny) = (-dy / len, dx / len);
    let offset = (c.0 - start.0) * nx + (c.1 - start.1) * ny;
    // Passing on the side the obstacle sits towards, the route also clears its offset.
    let clearance = size.max(0.0) + ROBOT_RADIUS + spare + (side * offset).max(0.0);
    let along = (c.0 - start.0) * dx / len + (c.1 - start.1) * dy / len;
    let base = (start.0 + along * dx / len, start.1 + along * dy / len);
    (base.0 + side * clearance * nx, base.1 + side * clearance * ny)
}

/// Whether the robot fits at `p` with the clean route's clearance from walls, other obstacles
/// than `obstacle` and objects other than the `target`.
fn has_room(scene: &Scene, p: (f32, f32), obstacle: usize, target: usize) -> bool {
    let room = ROBOT_RADIUS + CLEARANCE;
    scene.walls.iter().all(|w| w.distance(p.0, p.1) > room)
        && scene.obstacles.iter().enumerate().all(|(i, o)| i == obstacle || o.footprint.distance(p.0, p.1) > room)
        && scene.objects.iter().enumerate().all(|(i, o)| i == target || o.footprint().distance(p.0, p.1) > room)
}

impl Driver for Expert {
    fn name(&self) -> &str {
        "expert"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Result<Decision, PolicyError> {
        let (terminate, x, y, yaw, body) = self.command(obs.world);
        let bins = if !terminate && self.rng.random::<f32>() < self.quality.random_action {
            // A random command, but not the terminate action.
            let random = self.space.command(&random_bins(&self.space, &mut self.rng))?;
            self.space.encode_command(false, random.twist, random.gait)
        } else {
            self.bins(terminate, x, y, yaw, body)
        };
        output(&self.space, bins)
    }
}

/// The noiseless scripted expert (privileged state, no failure mode) as a driver for any episode:
/// the ceiling an evaluation table compares policies with. With a style other than clean, each
/// episode's expert has that style (its parameters drawn from the episode's seed): how a style of
/// the mixed data design scores alone.
pub struct CleanExpert {
    space: ActionSpace,
    style: StyleKind,
    name: String,
    seed: u64,
    episode: Option<Expert>,
}

impl CleanExpert {
    pub fn new(space: ActionSpace) -> Self {
        Self::styled(space, StyleKind::Clean)
    }

    pub fn styled(space: ActionSpace, style: StyleKind) -> Self {
        let name = match style {
            StyleKind::Clean => "expert".to_owned(),
            other => format!(
                "expert ({})",
                serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            ),
        };
        Self { space, style, name, seed: 0, episode: None }
    }
}

impl Driver for CleanExpert {
    fn name(&self) -> &str {
        &self.name
    }

    fn reset(&mut self, seed: u64) {
        self.seed = seed;
        self.episode = None;
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Result<Decision, PolicyError> {
        let (space, seed, style) = (&self.space, self.seed, self.style);
        let expert = self.episode.get_or_insert_with(|| {
            let quality = match style {
                StyleKind::Clean => ExpertQuality::clean(),
                kind => ExpertQuality::styled(kind, &mut StdRng::seed_from_u64(seed ^ STYLE_SALT)),
            };
            Expert::new(obs.world.scenario(), space.clone(), quality, seed)
        });
        expert.decide(obs)
    }
}

/// Keeps a styled expert's parameters apart from its noise stream (both come from one seed).
const STYLE_SALT: u64 = 0x5771_e000;
