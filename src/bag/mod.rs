//! rosbag2 bags without ROS installed: MCAP and sqlite3 storage, CDR messages, `ros2msg`
//! definitions and `metadata.yaml`, read with the `mcap` and `rusqlite` crates, written (MCAP
//! only) with `mcap` and `cdr-encoding`; messages of any type decoded by [`dynamic`]. Each
//! storage backend is its own module under `storage/`; [`episode`] is the episode format that
//! collection writes and training reads.

mod cdr;
pub mod dynamic;
pub mod episode;
mod frames;
pub mod metadata;
pub mod msgs;
mod read;
mod storage;
mod write;

use std::path::PathBuf;

pub use cdr::{decode, encode, CdrError};
pub use frames::{camera_frame, CameraMessageError};
pub use metadata::{BagMetadata, METADATA_FILE};
pub use read::{BagInfo, BagReader, TopicInfo};
pub use storage::{RawMessage, ReadReport, Storage, StoredDefinition};
pub use write::{BagWriter, TopicQos};

#[derive(Debug, thiserror::Error)]
pub enum BagError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no .mcap or .db3 files", path.display())]
    NoFiles { path: PathBuf },
    #[error("{}: storage `{id}` is not supported (moe_vla reads mcap and sqlite3)", path.display())]
    UnknownStorage { path: PathBuf, id: String },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("writing {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Metadata { path: PathBuf, reason: String },
}

#[cfg(test)]
mod tests;
