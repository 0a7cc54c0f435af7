//! rosbag2 bags without ROS installed: MCAP storage, CDR messages, `ros2msg` schemas and
//! `metadata.yaml`, read and written with the `mcap` and `cdr-encoding` crates.

mod cdr;
mod frames;
pub mod metadata;
pub mod msgs;
mod read;
mod write;

use std::path::PathBuf;

pub use cdr::{decode, encode, CdrError};
pub use frames::{camera_frame, CameraMessageError};
pub use metadata::{BagMetadata, METADATA_FILE};
pub use read::{BagInfo, BagReader, RawMessage, ReadReport, TopicInfo};
pub use write::{BagWriter, TopicQos};

#[derive(Debug, thiserror::Error)]
pub enum BagError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no .mcap files", path.display())]
    NoFiles { path: PathBuf },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("writing {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Metadata { path: PathBuf, reason: String },
}

#[cfg(test)]
mod tests;
