//! ROS messages <-> the library's types.

use std::time::Duration;

use r2r::builtin_interfaces::msg::Time;
use r2r::geometry_msgs::msg::{Twist, TwistStamped, Vector3};
use r2r::moe_vla_msgs::msg::{GaitCommand, VlaDecision};
use r2r::sensor_msgs::msg::{CompressedImage, Image};
use r2r::std_msgs::msg::Header;

use crate::action::{GaitFields, GaitPreset, PlanarTwist};
use crate::policy::tokenize::{accept_instruction, TokenizeError, MAX_INSTRUCTION_BYTES};
use crate::policy::{Decision, FrameError, OwnedFrame};

/// A camera message as the node takes it.
pub struct CameraFrame {
    pub frame: OwnedFrame,
    /// The header stamp.
    pub stamp: Duration,
    /// The header frame_id: the camera's optical frame, which decisions made on it carry.
    pub frame_id: String,
}

/// A sensor_msgs/Image as a checked frame; the pixel buffer moves, it is not copied.
pub fn frame_from_image(msg: Image) -> Result<CameraFrame, FrameError> {
    let frame = OwnedFrame::raw(msg.width, msg.height, msg.step, &msg.encoding, msg.data)?;
    Ok(CameraFrame { frame, stamp: duration(&msg.header.stamp), frame_id: msg.header.frame_id })
}

/// A sensor_msgs/CompressedImage; the bytes are decoded (and checked) on the inference thread.
pub fn frame_from_compressed(msg: CompressedImage) -> Result<CameraFrame, FrameError> {
    if msg.data.is_empty() {
        return Err(FrameError::Decode("empty CompressedImage".into()));
    }
    Ok(CameraFrame { frame: OwnedFrame::Compressed(msg.data), stamp: duration(&msg.header.stamp), frame_id: msg.header.frame_id })
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InstructionError {
    #[error("instruction message is truncated or not CDR")]
    Malformed,
    #[error("instruction is not valid UTF-8 (byte {at})")]
    InvalidUtf8 { at: usize },
    #[error(transparent)]
    Rejected(#[from] TokenizeError),
}

impl InstructionError {
    /// A stable name per kind of problem, for throttled logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::Rejected(TokenizeError::TooLong { .. }) => "too_long",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// Reads a serialized std_msgs/String. r2r's typed String turns invalid UTF-8 into "" silently,
/// so the node takes the CDR bytes and says what was wrong.
pub fn instruction_from_cdr(bytes: &[u8]) -> Result<String, InstructionError> {
    // 4-byte encapsulation header (representation id, options), then uint32 length with the NUL.
    let (header, rest) = bytes.split_at_checked(4).ok_or(InstructionError::Malformed)?;
    let (len, body) = rest.split_at_checked(4).ok_or(InstructionError::Malformed)?;
    let len = match header[1] {
        0x01 => u32::from_le_bytes(len.try_into().expect("4 bytes")),
        0x00 => u32::from_be_bytes(len.try_into().expect("4 bytes")),
        _ => return Err(InstructionError::Malformed),
    } as usize;
    let text = body.get(..len.saturating_sub(1)).ok_or(InstructionError::Malformed)?;
    if text.len() > MAX_INSTRUCTION_BYTES {
        // Refused before the UTF-8 check, which would otherwise read all of it.
        return Err(TokenizeError::TooLong { bytes: text.len() }.into());
    }
    let text = std::str::from_utf8(text).map_err(|e| InstructionError::InvalidUtf8 { at: e.valid_up_to() })?;
    Ok(accept_instruction(text)?.to_owned())
}

pub fn header(stamp: Duration, frame_id: &str) -> Header {
    Header { stamp: time(stamp), frame_id: frame_id.to_owned() }
}

pub fn time(stamp: Duration) -> Time {
    r2r::Clock::to_builtin_time(&stamp)
}

/// A stamp as time since the epoch (stamps before it count as the epoch).
pub fn duration(t: &Time) -> Duration {
    Duration::new(t.sec.max(0) as u64, t.nanosec.min(999_999_999))
}

pub fn twist(t: PlanarTwist) -> Twist {
    Twist {
        linear: Vector3 { x: t.x_vel.into(), y: t.y_vel.into(), z: 0.0 },
        angular: Vector3 { x: 0.0, y: 0.0, z: t.yaw_vel.into() },
    }
}

pub fn twist_stamped(t: PlanarTwist, header: Header) -> TwistStamped {
    TwistStamped { header, twist: twist(t) }
}

/// The gait message; `standing` (the robot is stopped) sends STAND rather than a stepping gait.
pub fn gait_command(g: &GaitFields, standing: bool, header: Header) -> GaitCommand {
    // r2r's message constants are bindgen integers of distinct types; the field is a byte.
    let gait = match GaitPreset::nearest(g.phase_offsets) {
        _ if standing => GaitCommand::STAND as u8,
        GaitPreset::Pronk => GaitCommand::PRONK as u8,
        GaitPreset::Trot => GaitCommand::TROT as u8,
        GaitPreset::Bound => GaitCommand::BOUND as u8,
        GaitPreset::Pace => GaitCommand::PACE as u8,
    };
    GaitCommand {
        header,
        gait,
        phase_offsets: g.phase_offsets.to_vec(),
        body_height: g.body_height,
        step_frequency: g.step_frequency,
        footswing_height: g.footswing_height,
        pitch: g.pitch,
        stance_width: g.stance_width,
    }
}

pub struct DecisionContext<'a> {
    pub header: Header,
    pub instruction: &'a str,
    pub names: &'a [String],
    pub latency_ms: f32,
    pub model_id: &'a str,
}

pub fn decision(out: &Decision, info: DecisionContext<'_>) -> VlaDecision {
    VlaDecision {
        header: info.header,
        instruction: info.instruction.to_owned(),
        bins: out.bins.clone(),
        q_values: out.q.clone(),
        values: out.command.values.clone(),
        dimension_names: info.names.to_vec(),
        terminate: out.command.terminate,
        latency_ms: info.latency_ms,
        inference_ms: out.timing.inference_ms,
        expert_load: out.expert_load.clone(),
        model_id: info.model_id.to_owned(),
    }
}
