//! A recorded camera message as the frame the policy reads: the one conversion bag replay and
//! training share, so a model sees the same input from a bag at training and at replay.

use super::msgs::{CompressedImage, Image, Time};
use super::{decode, CdrError};
use crate::policy::{FrameError, OwnedFrame};

pub const IMAGE_TYPE: &str = "sensor_msgs/msg/Image";
pub const COMPRESSED_IMAGE_TYPE: &str = "sensor_msgs/msg/CompressedImage";

#[derive(Debug, thiserror::Error)]
pub enum CameraMessageError {
    #[error("undecodable message: {0}")]
    Cdr(#[from] CdrError),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The frame and header stamp of a camera message of type `type_name` (CDR `data`); `None` when
/// the type is not a camera image. Compressed frames are checked when decoded, later.
pub fn camera_frame(type_name: &str, data: &[u8]) -> Option<Result<(OwnedFrame, Time), CameraMessageError>> {
    match type_name {
        IMAGE_TYPE => Some(decode::<Image>(data).map_err(CameraMessageError::from).and_then(|img| {
            let frame = OwnedFrame::raw(img.width, img.height, img.step, &img.encoding, img.data)?;
            Ok((frame, img.header.stamp))
        })),
        COMPRESSED_IMAGE_TYPE => Some(
            decode::<CompressedImage>(data).map(|img| (OwnedFrame::Compressed(img.data), img.header.stamp)).map_err(Into::into),
        ),
        _ => None,
    }
}
