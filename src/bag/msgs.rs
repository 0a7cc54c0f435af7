//! The ROS 2 messages moe_vla reads and writes in bags, as serde types for CDR, each with its
//! full `ros2msg` definition (own text, then every dependency under a `MSG:` line), the form
//! rosbag2 stores as an MCAP schema.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::action::{GaitFields, GaitPreset, PlanarTwist};

/// A message type a bag can hold.
pub trait RosMessage: Serialize + DeserializeOwned {
    /// Full type name, e.g. `sensor_msgs/msg/Image`.
    const TYPE: &'static str;
    /// The `.msg` text of the type itself.
    const TEXT: &'static str;
    /// Types whose definitions the full definition carries: (`pkg/Type`, `.msg` text).
    const DEPENDENCIES: &'static [(&'static str, &'static str)];

    /// The `ros2msg` schema text: own definition, then each dependency.
    fn definition() -> String {
        let mut text = Self::TEXT.trim_end().to_owned();
        for (name, dep) in Self::DEPENDENCIES {
            text.push_str("\n\n================================================================================\nMSG: ");
            text.push_str(name);
            text.push('\n');
            text.push_str(dep.trim_end());
        }
        text.push('\n');
        text
    }
}

/// The full definition of a type moe_vla knows, for bags that carry none (rosbag2's sqlite3
/// storage before Jazzy).
pub fn known_definition(type_name: &str) -> Option<String> {
    Some(match type_name {
        Image::TYPE => Image::definition(),
        CompressedImage::TYPE => CompressedImage::definition(),
        StringMsg::TYPE => StringMsg::definition(),
        Twist::TYPE => Twist::definition(),
        TwistStamped::TYPE => TwistStamped::definition(),
        Header::TYPE => Header::definition(),
        GaitCommand::TYPE => GaitCommand::definition(),
        VlaDecision::TYPE => VlaDecision::definition(),
        EpisodeOutcome::TYPE => EpisodeOutcome::definition(),
        _ => return None,
    })
}

const TIME: (&str, &str) = ("builtin_interfaces/Time", "int32 sec\nuint32 nanosec\n");
const HEADER: (&str, &str) = ("std_msgs/Header", "builtin_interfaces/Time stamp\nstring frame_id\n");
const VECTOR3: (&str, &str) = ("geometry_msgs/Vector3", "float64 x\nfloat64 y\nfloat64 z\n");
const TWIST: (&str, &str) = ("geometry_msgs/Twist", "Vector3  linear\nVector3  angular\n");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    pub fn from_nanos(ns: u64) -> Self {
        Self { sec: (ns / 1_000_000_000).min(i32::MAX as u64) as i32, nanosec: (ns % 1_000_000_000) as u32 }
    }

    /// Nanoseconds since the epoch; times before it count as the epoch.
    pub fn nanos(&self) -> u64 {
        (self.sec.max(0) as u64) * 1_000_000_000 + self.nanosec.min(999_999_999) as u64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

impl RosMessage for Header {
    const TYPE: &'static str = "std_msgs/msg/Header";
    const TEXT: &'static str = HEADER.1;
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[TIME];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub encoding: String,
    pub is_bigendian: u8,
    pub step: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl RosMessage for Image {
    const TYPE: &'static str = "sensor_msgs/msg/Image";
    const TEXT: &'static str =
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n";
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressedImage {
    pub header: Header,
    pub format: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl RosMessage for CompressedImage {
    const TYPE: &'static str = "sensor_msgs/msg/CompressedImage";
    const TEXT: &'static str = "std_msgs/Header header\nstring format\nuint8[] data\n";
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StringMsg {
    pub data: String,
}

impl RosMessage for StringMsg {
    const TYPE: &'static str = "std_msgs/msg/String";
    const TEXT: &'static str = "string data\n";
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[];
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Twist {
    pub linear: Vector3,
    pub angular: Vector3,
}

impl From<PlanarTwist> for Twist {
    fn from(t: PlanarTwist) -> Self {
        Self {
            linear: Vector3 { x: t.x_vel.into(), y: t.y_vel.into(), z: 0.0 },
            angular: Vector3 { x: 0.0, y: 0.0, z: t.yaw_vel.into() },
        }
    }
}

impl RosMessage for Twist {
    const TYPE: &'static str = "geometry_msgs/msg/Twist";
    const TEXT: &'static str = TWIST.1;
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[VECTOR3];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistStamped {
    pub header: Header,
    pub twist: Twist,
}

impl RosMessage for TwistStamped {
    const TYPE: &'static str = "geometry_msgs/msg/TwistStamped";
    const TEXT: &'static str = "std_msgs/Header header\nTwist twist\n";
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME, TWIST, VECTOR3];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GaitCommand {
    pub header: Header,
    pub gait: u8,
    pub phase_offsets: [f32; 3],
    pub body_height: f32,
    pub step_frequency: f32,
    pub footswing_height: f32,
    pub pitch: f32,
    pub stance_width: f32,
}

impl GaitCommand {
    /// The `gait` value of a stopped robot (GaitCommand.msg's STAND).
    pub const STAND: u8 = 4;

    /// The message for a command's gait fields; `gait` is the preset nearest the phase offsets.
    pub fn from_fields(g: &GaitFields, header: Header) -> Self {
        Self {
            header,
            gait: GaitPreset::nearest(g.phase_offsets) as u8,
            phase_offsets: g.phase_offsets,
            body_height: g.body_height,
            step_frequency: g.step_frequency,
            footswing_height: g.footswing_height,
            pitch: g.pitch,
            stance_width: g.stance_width,
        }
    }

    /// The message sent while the robot is stopped: `gait` is STAND (do not step), the other
    /// fields give the posture to hold.
    pub fn standing(g: &GaitFields, header: Header) -> Self {
        Self { gait: Self::STAND, ..Self::from_fields(g, header) }
    }

    /// The command's gait fields (the `gait` preset is implied by the phase offsets).
    pub fn fields(&self) -> GaitFields {
        GaitFields {
            body_height: self.body_height,
            step_frequency: self.step_frequency,
            phase_offsets: self.phase_offsets,
            footswing_height: self.footswing_height,
            pitch: self.pitch,
            stance_width: self.stance_width,
        }
    }
}

impl RosMessage for GaitCommand {
    const TYPE: &'static str = "moe_vla_msgs/msg/GaitCommand";
    const TEXT: &'static str = include_str!("../../moe_vla_msgs/msg/GaitCommand.msg");
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VlaDecision {
    pub header: Header,
    pub instruction: String,
    pub bins: Vec<u32>,
    pub q_values: Vec<f32>,
    pub values: Vec<f32>,
    pub dimension_names: Vec<String>,
    pub terminate: bool,
    pub latency_ms: f32,
    pub inference_ms: f32,
    pub expert_load: Vec<f32>,
    pub model_id: String,
}

impl RosMessage for VlaDecision {
    const TYPE: &'static str = "moe_vla_msgs/msg/VlaDecision";
    const TEXT: &'static str = include_str!("../../moe_vla_msgs/msg/VlaDecision.msg");
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME];
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeOutcome {
    pub header: Header,
    pub family: String,
    pub instruction: String,
    pub success: bool,
    pub reason: String,
    pub terminated: bool,
    pub steps: u32,
    pub seed: u64,
    pub held_out: bool,
}

impl RosMessage for EpisodeOutcome {
    const TYPE: &'static str = "moe_vla_msgs/msg/EpisodeOutcome";
    const TEXT: &'static str = include_str!("../../moe_vla_msgs/msg/EpisodeOutcome.msg");
    const DEPENDENCIES: &'static [(&'static str, &'static str)] = &[HEADER, TIME];
}
