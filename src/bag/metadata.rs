//! rosbag2's `metadata.yaml` (`rosbag2_bagfile_information`) as one serde type, for writing and
//! for reading. Every field has a default and unknown fields are ignored, so the files of
//! rosbag2's metadata versions 4 to 9 (and rosbags') all read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BagError;

/// The file name of a bag directory's metadata.
pub const METADATA_FILE: &str = "metadata.yaml";

/// rosbag2's `rosbag2_bagfile_information`. Optional fields that newer versions add are left out
/// of the output when absent, so an older version's file stays exactly that version's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BagMetadata {
    pub version: u32,
    pub storage_identifier: String,
    pub duration: Duration,
    pub starting_time: Time,
    pub message_count: u64,
    pub topics_with_message_count: Vec<TopicWithMessageCount>,
    pub compression_format: String,
    pub compression_mode: String,
    /// The storage files, relative to the bag directory (version 3 on).
    pub relative_file_paths: Vec<String>,
    /// Per-file span and count (version 5 on).
    pub files: Vec<FileInformation>,
    /// Free-form key/value pairs (version 6 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<BTreeMap<String, String>>,
    /// The ROS distribution that recorded the bag (version 8 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ros_distro: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Duration {
    pub nanoseconds: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Time {
    pub nanoseconds_since_epoch: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicWithMessageCount {
    pub topic_metadata: TopicMetadata,
    pub message_count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicMetadata {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub serialization_format: String,
    /// A YAML list of QoS profiles: up to version 8 as one string holding it, from version 9 the
    /// list itself.
    pub offered_qos_profiles: serde_yaml_ng::Value,
    /// `RIHS01_...` (version 7 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_description_hash: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileInformation {
    pub path: String,
    pub starting_time: Time,
    pub duration: Duration,
    pub message_count: u64,
}

/// The file's single top-level key.
#[derive(Serialize, Deserialize)]
struct MetadataFile {
    rosbag2_bagfile_information: BagMetadata,
}

impl BagMetadata {
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str::<MetadataFile>(text).map(|file| file.rosbag2_bagfile_information)
    }

    pub fn to_yaml(&self) -> String {
        let file = MetadataFile { rosbag2_bagfile_information: self.clone() };
        serde_yaml_ng::to_string(&file).expect("plain data serialises")
    }

    /// Reads `<dir>/metadata.yaml`.
    pub fn read(dir: &Path) -> Result<Self, BagError> {
        let path = dir.join(METADATA_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BagError::Io { path: path.clone(), source })?;
        Self::from_yaml(&text).map_err(|e| BagError::Metadata { path, reason: e.to_string() })
    }

    /// Writes `<dir>/metadata.yaml`.
    pub fn write(&self, dir: &Path) -> Result<(), BagError> {
        let path = dir.join(METADATA_FILE);
        std::fs::write(&path, self.to_yaml()).map_err(|source| BagError::Io { path, source })
    }
}
