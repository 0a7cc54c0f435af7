//! What the task world is made of: the arena's walls, coloured objects, obstacles and bars, their
//! footprints, and the robot's pose. Tasks place them; the world moves the robot among them.

use serde::Serialize;

/// Robot footprint radius, m.
pub const ROBOT_RADIUS: f32 = 0.25;
/// Height of the body top (and the camera) at zero body-height offset, m.
pub const NOMINAL_BODY_TOP: f32 = 0.42;
/// Reached: robot centre within this distance of an object's surface, m.
pub const REACH_DISTANCE: f32 = 0.6;
/// Wall height, m.
pub const WALL_HEIGHT: f32 = 1.0;
/// Wall thickness, m.
pub const WALL_THICKNESS: f32 = 0.1;

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
