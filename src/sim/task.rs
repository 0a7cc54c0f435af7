//! Task families after QUARD, instruction templates with paraphrases (some held out), and
//! sampling of valid scenarios.

use std::collections::BTreeMap;
use std::f32::consts::PI;
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;

use super::scene::{wrap_angle, Color, Footprint, Object, Obstacle, Pose, Scene, Shape, ROBOT_RADIUS, WALL_THICKNESS};
use super::SimError;

/// Arena size, m.
pub const ARENA: (f32, f32) = (10.0, 8.0);
/// Bar height above the floor, m: bottom edge and top edge.
pub const BAR_BOTTOM: f32 = 0.30;
pub const BAR_TOP: f32 = 0.40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFamily {
    GoTo,
    Distinguish,
    GoAvoid,
    GoThrough,
    Crawl,
    Stop,
}

impl TaskFamily {
    pub const ALL: [TaskFamily; 6] = [Self::GoTo, Self::Distinguish, Self::GoAvoid, Self::GoThrough, Self::Crawl, Self::Stop];

    pub fn name(self) -> &'static str {
        match self {
            Self::GoTo => "go_to",
            Self::Distinguish => "distinguish",
            Self::GoAvoid => "go_avoid",
            Self::GoThrough => "go_through",
            Self::Crawl => "crawl",
            Self::Stop => "stop",
        }
    }

    /// Control steps before the episode ends (timeout; for stop, success by staying).
    pub fn max_steps(self) -> u32 {
        match self {
            Self::GoTo | Self::Distinguish => 100,
            Self::GoAvoid | Self::GoThrough | Self::Crawl => 125,
            Self::Stop => 15,
        }
    }

    /// Whether the family's instructions name a target object (`{o}` in its templates).
    pub fn names_object(self) -> bool {
        matches!(self, Self::GoTo | Self::Distinguish | Self::GoAvoid)
    }

    /// Instruction templates: (seen, held out). `{o}` stands for the target's name.
    pub fn templates(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Self::GoTo | Self::Distinguish => (
                &["go to the {o}", "walk to the {o}", "move towards the {o}", "approach the {o}"],
                &["walk towards the {o}", "go towards the {o}"],
            ),
            Self::GoAvoid => (
                &[
                    "go to the {o} and avoid the obstacle",
                    "walk to the {o} while avoiding the obstacle",
                    "go around the obstacle to the {o}",
                ],
                &["move towards the {o} and avoid the obstacle", "walk around the obstacle to the {o}"],
            ),
            Self::GoThrough => (
                &["go through the doorway", "walk through the door", "pass through the doorway"],
                &["walk through the doorway", "go through the door"],
            ),
            Self::Crawl => (
                &["crawl under the bar", "duck under the bar", "lower your body and go under the bar"],
                &["go under the bar", "duck and crawl under the bar"],
            ),
            Self::Stop => (&["stop", "stay where you are", "stand still"], &["stay still", "halt"]),
        }
    }
}

impl fmt::Display for TaskFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskFamily {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        Self::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| SimError::UnknownFamily(s.to_owned()))
    }
}

/// Instruction templates that replace the built-in ones (seen and held out alike) for the
/// families they name: `eval --templates`, a JSON object family -> list of templates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Templates {
    pub families: BTreeMap<TaskFamily, Vec<String>>,
}

impl Templates {
    /// Parses and checks a templates file's text: known family names, non-empty lists, and `{o}`
    /// in exactly the families whose instructions name an object.
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        let bad = |m: String| SimError::Invalid(format!("templates: {m}"));
        let raw: BTreeMap<String, Vec<String>> = serde_json::from_str(text)
            .map_err(|e| bad(format!("expected a JSON object of family -> list of templates ({e})")))?;
        let mut families = BTreeMap::new();
        for (name, templates) in raw {
            let family = TaskFamily::from_str(&name)?;
            if templates.is_empty() {
                return Err(bad(format!("{name} has no templates")));
            }
            for t in &templates {
                if t.trim().is_empty() {
                    return Err(bad(format!("{name} has an empty template")));
                }
                match (family.names_object(), t.contains("{o}")) {
                    (true, false) => return Err(bad(format!("{name} template {t:?} lacks {{o}} (the target's name)"))),
                    (false, true) => {
                        return Err(bad(format!("{name} template {t:?} has {{o}}, but {name} has no target object")))
                    }
                    _ => {}
                }
            }
            families.insert(family, templates);
        }
        Ok(Self { families })
    }

    /// Reads and checks a templates file.
    pub fn read(path: &std::path::Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text).map_err(|e| SimError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The instruction for `scenario` from this file's templates of its family, if it has any;
    /// `pick` chooses the template.
    pub fn instruction(&self, scenario: &Scenario, pick: &mut StdRng) -> Option<String> {
        let templates = self.families.get(&scenario.family)?;
        let template = &templates[pick.random_range(0..templates.len())];
        let name = match scenario.goal {
            Goal::Reach { object } => scenario.scene.objects[object].name(),
            Goal::Pass { .. } | Goal::Stay => String::new(),
        };
        Some(template.replace("{o}", &name))
    }
}

/// Every instruction the templates can produce (with all object names), sorted: for tokenizers.
pub fn all_instructions(held_out: bool) -> Vec<String> {
    let mut out = Vec::new();
    for family in TaskFamily::ALL {
        let (seen, held) = family.templates();
        for template in if held_out { held } else { seen } {
            if template.contains("{o}") {
                for color in Color::ALL {
                    for shape in Shape::ALL {
                        out.push(template.replace("{o}", &format!("{} {}", color.name(), shape.name())));
                    }
                }
            } else {
                out.push((*template).to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What success means in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Reach this object (index into the scene's objects).
    Reach { object: usize },
    /// Get fully past the cross wall at `wall_x` (through its gap centred on `gap_y`).
    Pass { wall_x: f32, gap_y: f32 },
    /// Stay within STAY_RADIUS of the start (or terminate).
    Stay,
}

/// A sampled task: scene, start pose, goal and instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub family: TaskFamily,
    pub instruction: String,
    /// The instruction came from a held-out paraphrase.
    pub held_out: bool,
    pub scene: Scene,
    pub start: Pose,
    pub goal: Goal,
}

/// Samples a valid scenario of `family`: collision-free start, goal 2-5 m ahead within the
/// camera's field of view, distractors off the straight path.
pub fn sample_task(family: TaskFamily, held_out: bool, rng: &mut StdRng) -> Result<Scenario, SimError> {
    for _ in 0..500 {
        let sampled = match family {
            TaskFamily::GoTo => {
                let n = usize::from(rng.random_bool(0.5));
                sample_reach(family, rng, n, false)
            }
            TaskFamily::Distinguish => {
                let n = rng.random_range(2..=3);
                sample_reach(family, rng, n, false)
            }
            TaskFamily::GoAvoid => sample_reach(family, rng, 0, true),
            TaskFamily::GoThrough | TaskFamily::Crawl => sample_pass(family, rng),
            TaskFamily::Stop => sample_stop(rng),
        };
        if let Some((scene, start, goal, name)) = sampled {
            let (seen, held) = family.templates();
            let templates = if held_out { held } else { seen };
            let template = templates[rng.random_range(0..templates.len())];
            let instruction = template.replace("{o}", &name);
            return Ok(Scenario { family, instruction, held_out, scene, start, goal });
        }
    }
    Err(SimError::Sampling(family))
}

type Sampled = (Scene, Pose, Goal, String);

fn random_start(rng: &mut StdRng) -> (f32, f32) {
    (rng.random_range(0.8..2.5), rng.random_range(1.2..ARENA.1 - 1.2))
}

fn inside(x: f32, y: f32, margin: f32) -> bool {
    x > margin && x < ARENA.0 - margin && y > margin && y < ARENA.1 - margin
}

/// Distance from a point to the segment a-b.
pub(crate) fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 { (((p.0 - a.0) * abx + (p.1 - a.1) * aby) / len2).clamp(0.0, 1.0) } else { 0.0 };
    (p.0 - a.0 - t * abx).hypot(p.1 - a.1 - t * aby)
}

fn random_object(rng: &mut StdRng) -> (Shape, Color) {
    (Shape::ALL[rng.random_range(0..Shape::ALL.len())], Color::ALL[rng.random_range(0..Color::ALL.len())])
}

/// A point `dist` m away from `from` at `bearing` rad.
fn ahead(from: (f32, f32), bearing: f32, dist: f32) -> (f32, f32) {
    (from.0 + dist * bearing.cos(), from.1 + dist * bearing.sin())
}

fn sample_reach(family: TaskFamily, rng: &mut StdRng, distractors: usize, obstacle: bool) -> Option<Sampled> {
    let start = random_start(rng);
    let yaw = rng.random_range(-0.5..0.5);
    let bearing = yaw + rng.random_range(-0.35..0.35);
    let dist = if obstacle { rng.random_range(3.2..5.0) } else { rng.random_range(2.0..5.0) };
    let t = ahead(start, bearing, dist);
    if !inside(t.0, t.1, 0.7) {
        return None;
    }
    let (shape, color) = random_object(rng);
    let target = Object { shape, color, x: t.0, y: t.1 };
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.objects.push(target);

    for _ in 0..distractors {
        let (s, c) = if family == TaskFamily::Distinguish {
            // Shares exactly one of shape and colour with the target.
            let (s, c) = random_object(rng);
            if rng.random_bool(0.5) {
                (shape, if c == color { Color::ALL[(c as usize + 1) % Color::ALL.len()] } else { c })
            } else {
                (if s == shape { Shape::ALL[(s as usize + 1) % Shape::ALL.len()] } else { s }, color)
            }
        } else {
            let (s, c) = random_object(rng);
            if s == shape || c == color {
                return None;
            }
            (s, c)
        };
        let p = ahead(start, yaw + rng.random_range(-0.7..0.7), rng.random_range(1.8..5.5));
        let clear = inside(p.0, p.1, 0.7)
            && segment_distance(p, start, t) > 1.3
            && scene.objects.iter().all(|o| (o.x - p.0).hypot(o.y - p.1) > 1.4);
        if !clear {
            return None;
        }
        scene.objects.push(Object { shape: s, color: c, x: p.0, y: p.1 });
    }

    if obstacle {
        // Across the straight path, a little off centre, low enough to see the target over it.
        let along = rng.random_range(0.4..0.6);
        let side = rng.random_range(-0.2..0.2);
        let (nx, ny) = (-bearing.sin(), bearing.cos());
        let c = (start.0 + along * (t.0 - start.0) + side * nx, start.1 + along * (t.1 - start.1) + side * ny);
        let size = rng.random_range(0.25..0.35);
        let height = rng.random_range(0.22..0.3);
        let footprint = if rng.random_bool(0.5) {
            Footprint::Circle { x: c.0, y: c.1, r: size }
        } else {
            Footprint::rect(c.0 - size, c.1 - size, c.0 + size, c.1 + size)
        };
        scene.obstacles.push(Obstacle { footprint, height });
    }
    add_clutter(&mut scene, rng, start, t);

    let pose = Pose { x: start.0, y: start.1, yaw, height: 0.0 };
    if !start_is_clear(&scene, pose) {
        return None;
    }
    Some((scene, pose, Goal::Reach { object: 0 }, target.name()))
}

/// Maybe a tall grey pillar somewhere off the path, for variety.
fn add_clutter(scene: &mut Scene, rng: &mut StdRng, start: (f32, f32), goal: (f32, f32)) {
    if !rng.random_bool(0.5) {
        return;
    }
    let p = (rng.random_range(1.0..ARENA.0 - 1.0), rng.random_range(1.0..ARENA.1 - 1.0));
    let r = rng.random_range(0.15..0.3);
    let clear = segment_distance(p, start, goal) > r + 1.2
        && scene.objects.iter().all(|o| (o.x - p.0).hypot(o.y - p.1) > 1.2)
        && scene.obstacles.iter().all(|o| o.footprint.distance(p.0, p.1) > 1.2);
    if clear {
        scene.obstacles.push(Obstacle { footprint: Footprint::Circle { x: p.0, y: p.1, r }, height: 1.0 });
    }
}

/// No collision, and no object within reach, at the start.
fn start_is_clear(scene: &Scene, pose: Pose) -> bool {
    !scene.collision(pose.x, pose.y, pose.body_top(), None)
        && scene.objects.iter().all(|o| o.footprint().distance(pose.x, pose.y) > 1.0)
        && scene.obstacles.iter().all(|o| o.footprint.distance(pose.x, pose.y) > 0.6)
}

fn sample_pass(family: TaskFamily, rng: &mut StdRng) -> Option<Sampled> {
    let start = random_start(rng);
    let wall_x = start.0 + rng.random_range(2.2..4.0);
    let gap_y = start.1 + (wall_x - start.0) * rng.random_range(-0.35f32..0.35).tan();
    let gap = if family == TaskFamily::Crawl { rng.random_range(1.1..1.4) } else { rng.random_range(1.0..1.2) };
    if gap_y - 0.5 * gap < 0.6 || gap_y + 0.5 * gap > ARENA.1 - 0.6 {
        return None;
    }
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    scene.add_cross_wall(wall_x, gap_y, gap);
    if family == TaskFamily::Crawl {
        let h = 0.5 * WALL_THICKNESS;
        scene.bars.push(super::scene::Bar {
            footprint: Footprint::rect(wall_x - h, gap_y - 0.5 * gap, wall_x + h, gap_y + 0.5 * gap),
            bottom: BAR_BOTTOM,
            top: BAR_TOP,
        });
    }
    // Something to look at beyond the wall, out of the way.
    if rng.random_bool(0.5) {
        let (shape, color) = random_object(rng);
        let p = (wall_x + rng.random_range(2.0..3.5), rng.random_range(1.0..ARENA.1 - 1.0));
        if inside(p.0, p.1, 0.7) && (p.1 - gap_y).abs() > 1.5 {
            scene.objects.push(Object { shape, color, x: p.0, y: p.1 });
        }
    }
    let bearing = (gap_y - start.1).atan2(wall_x - start.0);
    let pose = Pose { x: start.0, y: start.1, yaw: wrap_angle(bearing + rng.random_range(-0.3..0.3)), height: 0.0 };
    if !start_is_clear(&scene, pose) {
        return None;
    }
    Some((scene, pose, Goal::Pass { wall_x, gap_y }, String::new()))
}

fn sample_stop(rng: &mut StdRng) -> Option<Sampled> {
    let start = (rng.random_range(1.0..ARENA.0 - 3.0), rng.random_range(1.0..ARENA.1 - 1.0));
    let yaw = rng.random_range(-PI..PI);
    let mut scene = Scene::arena(ARENA.0, ARENA.1);
    for _ in 0..rng.random_range(1..=2) {
        let (shape, color) = random_object(rng);
        let p = ahead(start, yaw + rng.random_range(-0.7..0.7), rng.random_range(1.5..4.5));
        if inside(p.0, p.1, 0.7) && scene.objects.iter().all(|o| (o.x - p.0).hypot(o.y - p.1) > 1.4) {
            scene.objects.push(Object { shape, color, x: p.0, y: p.1 });
        }
    }
    let pose = Pose { x: start.0, y: start.1, yaw, height: 0.0 };
    if !start_is_clear(&scene, pose) || scene.walls.iter().any(|w| w.distance(start.0, start.1) < ROBOT_RADIUS + 0.5) {
        return None;
    }
    Some((scene, pose, Goal::Stay, String::new()))
}
