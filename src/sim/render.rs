//! First-person camera rendered in software by column ray casting: per image column, the ray is
//! intersected with every footprint, and the hits are drawn far to near with their vertical
//! extents (a ball's and a cone's depend on where the ray passes). Sky and a chequered floor
//! behind, distance shading on top. rgb8, row-major, no padding.

use super::scene::{Footprint, Pose, Scene, Shape, WALL_HEIGHT};

/// Horizontal field of view, degrees.
pub const FOV_DEG: f32 = 90.0;
/// Nearest depth drawn, m (a footprint the camera is inside of fills the view).
const NEAR: f32 = 0.05;

const WALL_RGB: [u8; 3] = [205, 195, 175];
const OBSTACLE_RGB: [u8; 3] = [120, 120, 124];
const BAR_RGB: [u8; 3] = [75, 50, 30];
const FLOOR_RGB: [[f32; 3]; 2] = [[150.0, 142.0, 128.0], [128.0, 121.0, 108.0]];
const SKY_TOP: [f32; 3] = [120.0, 165.0, 230.0];
const SKY_HORIZON: [f32; 3] = [215.0, 228.0, 240.0];

/// One footprint hit by a column's ray.
struct Span {
    /// Distance along the view axis, m.
    depth: f32,
    z0: f32,
    z1: f32,
    rgb: [f32; 3],
}

/// Renders what the robot's camera sees: `width` x `height` rgb8 pixels.
pub fn render(scene: &Scene, pose: &Pose, width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    render_into(scene, pose, width, height, &mut out);
    out
}

/// As [`render`], into a reused buffer.
pub fn render_into(scene: &Scene, pose: &Pose, width: u32, height: u32, out: &mut Vec<u8>) {
    let (w, h) = (width as usize, height as usize);
    out.clear();
    out.resize(w * h * 3, 0);
    if w == 0 || h == 0 {
        return;
    }
    let focal = 0.5 * width as f32 / (0.5 * FOV_DEG.to_radians()).tan();
    let cy = 0.5 * height as f32;
    let cam_z = pose.body_top();
    let mut spans: Vec<Span> = Vec::with_capacity(32);
    for col in 0..w {
        let u = (col as f32 + 0.5 - 0.5 * width as f32) / focal;
        let (dy, dx) = (pose.yaw - u.atan()).sin_cos();
        let cos_rel = 1.0 / (1.0 + u * u).sqrt();
        let ray = Ray { ox: pose.x, oy: pose.y, dx, dy };
        for row in 0..h {
            let v = row as f32 + 0.5 - cy;
            let rgb = if v <= 0.0 {
                let a = (row as f32 + 0.5) / cy;
                lerp(SKY_TOP, SKY_HORIZON, a)
            } else {
                let depth = cam_z * focal / v;
                let t = depth / cos_rel;
                let (fx, fy) = (pose.x + dx * t, pose.y + dy * t);
                let cell = (fx.floor() as i64 + fy.floor() as i64).rem_euclid(2) as usize;
                // The floor fades into the horizon colour with distance.
                lerp(FLOOR_RGB[cell], SKY_HORIZON, (depth / 25.0).min(0.8))
            };
            put(out, (row * w + col) * 3, rgb);
        }

        spans.clear();
        let solid = |fp: &Footprint, z1: f32, base: [u8; 3], spans: &mut Vec<Span>| {
            if let Some(hit) = ray.hit(fp) {
                let shade = match hit.face {
                    Face::X => 1.0,
                    Face::Y => 0.8,
                    Face::Round(p) => 0.7 + 0.3 * (1.0 - p * p).max(0.0).sqrt(),
                };
                spans.push(Span { depth: hit.t_enter * cos_rel, z0: 0.0, z1, rgb: tint(base, shade) });
            }
        };
        for wall in &scene.walls {
            solid(wall, WALL_HEIGHT, WALL_RGB, &mut spans);
        }
        for o in &scene.obstacles {
            solid(&o.footprint, o.height, OBSTACLE_RGB, &mut spans);
        }
        for bar in &scene.bars {
            if let Some(hit) = ray.hit(&bar.footprint) {
                let shade = if matches!(hit.face, Face::Y) { 0.8 } else { 1.0 };
                let depth = hit.t_enter * cos_rel;
                spans.push(Span { depth, z0: bar.bottom, z1: bar.top, rgb: tint(BAR_RGB, shade) });
            }
        }
        for o in &scene.objects {
            let rgb = o.color.rgb();
            let (r, height) = (o.shape.radius(), o.shape.height());
            match o.shape {
                Shape::Cube | Shape::Cylinder => solid(&o.footprint(), height, rgb, &mut spans),
                Shape::Ball | Shape::Cone => {
                    let Some(hit) = ray.hit(&o.footprint()) else { continue };
                    let Face::Round(p) = hit.face else { continue };
                    let depth = hit.t_mid.max(NEAR) * cos_rel;
                    let shade = 0.7 + 0.3 * (1.0 - p * p).max(0.0).sqrt();
                    let (z0, z1) = if o.shape == Shape::Ball {
                        let s = r * (1.0 - p * p).max(0.0).sqrt();
                        (0.5 * height - s, 0.5 * height + s)
                    } else {
                        (0.0, height * (1.0 - p))
                    };
                    spans.push(Span { depth, z0, z1, rgb: tint(rgb, shade) });
                }
            }
        }
        spans.sort_by(|a, b| b.depth.total_cmp(&a.depth));
        for s in &spans {
            let depth = s.depth.max(NEAR);
            let top = cy - focal * (s.z1 - cam_z) / depth;
            let bottom = cy - focal * (s.z0 - cam_z) / depth;
            let first = (top - 0.5).ceil().clamp(0.0, h as f32) as usize;
            let end = (bottom - 0.5).ceil().clamp(0.0, h as f32) as usize;
            let fog = (1.0 - 0.05 * depth).clamp(0.45, 1.0);
            let rgb = [s.rgb[0] * fog, s.rgb[1] * fog, s.rgb[2] * fog];
            for row in first..end {
                put(out, (row * w + col) * 3, rgb);
            }
        }
    }
}

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn tint(rgb: [u8; 3], shade: f32) -> [f32; 3] {
    [rgb[0] as f32 * shade, rgb[1] as f32 * shade, rgb[2] as f32 * shade]
}

fn put(out: &mut [u8], i: usize, rgb: [f32; 3]) {
    for (o, v) in out[i..i + 3].iter_mut().zip(rgb) {
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
}

enum Face {
    /// A face normal to x.
    X,
    Y,
    /// A round footprint, passed at this fraction of its radius from the centre.
    Round(f32),
}

struct Hit {
    /// Along the ray to where it enters (NEAR when it starts inside).
    t_enter: f32,
    /// Along the ray to the point nearest the centre (round footprints).
    t_mid: f32,
    face: Face,
}

/// A horizontal ray with a unit direction.
struct Ray {
    ox: f32,
    oy: f32,
    dx: f32,
    dy: f32,
}

impl Ray {
    fn hit(&self, fp: &Footprint) -> Option<Hit> {
        match *fp {
            Footprint::Circle { x, y, r } => {
                let (ocx, ocy) = (self.ox - x, self.oy - y);
                let b = ocx * self.dx + ocy * self.dy;
                let c = ocx * ocx + ocy * ocy - r * r;
                let disc = b * b - c;
                if disc < 0.0 {
                    return None;
                }
                let root = disc.sqrt();
                if -b + root < NEAR {
                    return None;
                }
                // Distance of the ray from the centre, as a fraction of the radius.
                let p = ((ocx * ocx + ocy * ocy - b * b).max(0.0).sqrt() / r).min(1.0);
                Some(Hit { t_enter: (-b - root).max(NEAR), t_mid: -b, face: Face::Round(p) })
            }
            Footprint::Rect { x0, y0, x1, y1 } => {
                let (mut near, mut far, mut face) = (f32::NEG_INFINITY, f32::INFINITY, Face::X);
                for (o, d, lo, hi, axis) in [(self.ox, self.dx, x0, x1, Face::X), (self.oy, self.dy, y0, y1, Face::Y)] {
                    if d.abs() < 1e-9 {
                        if o < lo || o > hi {
                            return None;
                        }
                        continue;
                    }
                    let (a, b) = ((lo - o) / d, (hi - o) / d);
                    let (a, b) = (a.min(b), a.max(b));
                    if a > near {
                        near = a;
                        face = axis;
                    }
                    far = far.min(b);
                }
                if near > far || far < NEAR {
                    return None;
                }
                let t = near.max(NEAR);
                Some(Hit { t_enter: t, t_mid: t, face })
            }
        }
    }
}
