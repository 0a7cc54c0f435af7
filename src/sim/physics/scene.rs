//! A task-world [`Scene`] as MJCF: the arena and inner walls (boxes, [`WALL_HEIGHT`] tall), grey
//! obstacles (cylinders or boxes of their heights), bars (boxes from their bottom to their top
//! edge), and the coloured objects at their footprints with their heights (ball: sphere; cube:
//! box; cylinder: cylinder; cone: a 24-sided convex mesh, MuJoCo having no cone primitive).
//!
//! Every geom is static (in the world body) and named after what it is, `wall3`, `obstacle0`,
//! `bar0`, `object1` (the index into the scene's list), so that contacts can be told apart.

use std::fmt::Write;

use crate::sim::{Footprint, Scene, Shape, WALL_HEIGHT};

/// Faces of the cone mesh's side.
pub const CONE_SIDES: usize = 24;
/// Geom colours (RGB 0..1), as the kinematic world's renderer paints them.
const WALL_RGB: [f32; 3] = [205.0 / 255.0, 195.0 / 255.0, 175.0 / 255.0];
const OBSTACLE_RGB: [f32; 3] = [120.0 / 255.0, 120.0 / 255.0, 124.0 / 255.0];
const BAR_RGB: [f32; 3] = [75.0 / 255.0, 50.0 / 255.0, 30.0 / 255.0];

/// What a scene geom is, by its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneGeom {
    Wall(usize),
    Obstacle(usize),
    Bar(usize),
    Object(usize),
}

impl SceneGeom {
    /// The MJCF name of the geom.
    pub fn name(self) -> String {
        match self {
            Self::Wall(i) => format!("wall{i}"),
            Self::Obstacle(i) => format!("obstacle{i}"),
            Self::Bar(i) => format!("bar{i}"),
            Self::Object(i) => format!("object{i}"),
        }
    }

    /// Every scene geom of `scene`, in the order they are written.
    pub fn all(scene: &Scene) -> Vec<SceneGeom> {
        let mut all: Vec<SceneGeom> = (0..scene.walls.len()).map(Self::Wall).collect();
        all.extend((0..scene.obstacles.len()).map(Self::Obstacle));
        all.extend((0..scene.bars.len()).map(Self::Bar));
        all.extend((0..scene.objects.len()).map(Self::Object));
        all
    }
}

/// The MJCF of a scene: asset elements (the cone mesh, when a cone is in the scene) and world
/// body elements.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneMjcf {
    pub assets: String,
    pub worldbody: String,
}

/// Builds the scene's MJCF.
pub fn scene_mjcf(scene: &Scene) -> SceneMjcf {
    let mut body = String::new();
    for (i, wall) in scene.walls.iter().enumerate() {
        solid(&mut body, &SceneGeom::Wall(i).name(), wall, 0.0, WALL_HEIGHT, WALL_RGB);
    }
    for (i, o) in scene.obstacles.iter().enumerate() {
        solid(&mut body, &SceneGeom::Obstacle(i).name(), &o.footprint, 0.0, o.height, OBSTACLE_RGB);
    }
    for (i, bar) in scene.bars.iter().enumerate() {
        solid(&mut body, &SceneGeom::Bar(i).name(), &bar.footprint, bar.bottom, bar.top, BAR_RGB);
    }
    let mut assets = String::new();
    for (i, o) in scene.objects.iter().enumerate() {
        let name = SceneGeom::Object(i).name();
        let rgb = o.color.rgb().map(|c| f32::from(c) / 255.0);
        let (r, h) = (o.shape.radius(), o.shape.height());
        match o.shape {
            Shape::Ball => geom(&mut body, &name, "sphere", [o.x, o.y, r], &[r], rgb),
            Shape::Cube | Shape::Cylinder => solid(&mut body, &name, &o.footprint(), 0.0, h, rgb),
            Shape::Cone => {
                if assets.is_empty() {
                    assets = cone_mesh(r, h);
                }
                let _ = writeln!(
                    body,
                    "    <geom name=\"{name}\" type=\"mesh\" mesh=\"cone\" pos=\"{} {} 0\" rgba=\"{} {} {} 1\"/>",
                    o.x, o.y, rgb[0], rgb[1], rgb[2]
                );
            }
        }
    }
    SceneMjcf { assets, worldbody: body }
}

/// A footprint extruded from `bottom` to `top`: a box for a rectangle, a cylinder for a circle.
fn solid(out: &mut String, name: &str, footprint: &Footprint, bottom: f32, top: f32, rgb: [f32; 3]) {
    let (z, half) = (0.5 * (bottom + top), 0.5 * (top - bottom));
    match *footprint {
        Footprint::Rect { x0, y0, x1, y1 } => {
            let pos = [0.5 * (x0 + x1), 0.5 * (y0 + y1), z];
            geom(out, name, "box", pos, &[0.5 * (x1 - x0), 0.5 * (y1 - y0), half], rgb)
        }
        Footprint::Circle { x, y, r } => geom(out, name, "cylinder", [x, y, z], &[r, half], rgb),
    }
}

fn geom(out: &mut String, name: &str, kind: &str, pos: [f32; 3], size: &[f32], rgb: [f32; 3]) {
    let size: Vec<String> = size.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(
        out,
        "    <geom name=\"{name}\" type=\"{kind}\" pos=\"{} {} {}\" size=\"{}\" rgba=\"{} {} {} 1\"/>",
        pos[0],
        pos[1],
        pos[2],
        size.join(" "),
        rgb[0],
        rgb[1],
        rgb[2]
    );
}

/// A cone of base radius `r` and height `h` standing on its base at the mesh origin.
fn cone_mesh(r: f32, h: f32) -> String {
    let mut vertices = format!("0 0 {h}");
    for k in 0..CONE_SIDES {
        let a = std::f32::consts::TAU * k as f32 / CONE_SIDES as f32;
        let _ = write!(vertices, "  {} {} 0", r * a.cos(), r * a.sin());
    }
    format!("    <mesh name=\"cone\" vertex=\"{vertices}\"/>")
}
