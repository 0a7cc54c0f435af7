//! The storage side of a bag, as rosbag2 splits it into storage plugins: the message types every
//! backend reads into ([`RawMessage`], [`StoredDefinition`], [`ReadReport`]), the backends'
//! common interface ([`ReadFile`]) and one module per backend: [`mcap`] (`.mcap`) and [`sqlite3`]
//! (`.db3`, Humble's default). The backends import this module only; the reader
//! (`bag/read.rs`) picks one per bag.

pub mod mcap;
pub mod sqlite3;

use std::fmt;
use std::path::Path;

use super::BagError;

/// A backend's reading side, like rosbag2's `ReadOnlyInterface`: reads the storage file `path`
/// into `visit`, adding its messages and any damage to the report. Damage ends the file's
/// messages and is reported, not returned; an error is a file that cannot be opened at all.
pub type ReadFile = fn(&Path, &mut ReadReport, &mut dyn FnMut(&RawMessage<'_>)) -> Result<(), BagError>;

/// One message as stored.
pub struct RawMessage<'a> {
    pub topic: &'a str,
    /// Full type name, `pkg/msg/Type`.
    pub type_name: &'a str,
    /// `cdr` for ROS 2.
    pub encoding: &'a str,
    /// Receive time, ns since the epoch.
    pub log_time: u64,
    pub data: &'a [u8],
    /// The type's definition, when the bag carries one.
    pub definition: Option<&'a StoredDefinition>,
}

/// A message type's definition as a bag stores it: an MCAP schema, or a row of rosbag2's
/// `message_definitions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDefinition {
    /// `ros2msg` or `ros2idl`.
    pub encoding: String,
    pub text: String,
}

/// How far reading got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    pub messages: u64,
    /// Why and where reading stopped early, per damaged file.
    pub damage: Vec<String>,
}

/// The rosbag2 storage plugins moe_vla reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Mcap,
    Sqlite3,
}

impl Storage {
    /// rosbag2's `storage_identifier`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Mcap => "mcap",
            Self::Sqlite3 => "sqlite3",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        [Self::Mcap, Self::Sqlite3].into_iter().find(|s| s.id() == id)
    }

    /// The storage a file's extension names: `.mcap` or `.db3`.
    pub fn of_file(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "mcap" => Some(Self::Mcap),
            "db3" => Some(Self::Sqlite3),
            _ => None,
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// `pkg/Type` -> `pkg/msg/Type`; full names stay as they are. Bags from before the messages
/// moved to their own package (`moe_vla/msg/...`) read as `moe_vla_msgs/msg/...`.
pub(super) fn full_type_name(name: &str) -> String {
    let full = match name.split('/').collect::<Vec<_>>().as_slice() {
        [pkg, ty] => format!("{pkg}/msg/{ty}"),
        _ => name.to_owned(),
    };
    match full.strip_prefix("moe_vla/msg/") {
        Some(ty) => format!("moe_vla_msgs/msg/{ty}"),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::full_type_name;

    #[test]
    fn type_names_are_full_and_old_package_names_read_as_moe_vla_msgs() {
        assert_eq!(full_type_name("std_msgs/String"), "std_msgs/msg/String");
        assert_eq!(full_type_name("sensor_msgs/msg/Image"), "sensor_msgs/msg/Image");
        assert_eq!(full_type_name("moe_vla/msg/VlaDecision"), "moe_vla_msgs/msg/VlaDecision");
        assert_eq!(full_type_name("moe_vla/GaitCommand"), "moe_vla_msgs/msg/GaitCommand");
    }
}
