//! Reading rosbag2 bags: a directory with `metadata.yaml` and its storage files, or a bare
//! storage file. Two storages: MCAP (`.mcap`) and rosbag2's sqlite3 (`.db3`, Humble's
//! default). A truncated file or a damaged chunk or page is read as far as it goes, and the
//! report says where it stopped.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use mcap::read::Options;

use super::{sqlite, BagError, BagMetadata};

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

pub struct BagReader {
    files: Vec<PathBuf>,
    storage: Storage,
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

/// The storage files directly in `dir`, in name order: those of `storage`, or when that is not
/// known, the `.mcap` files, else the `.db3` files.
fn storage_files(dir: &Path, storage: Option<Storage>) -> std::io::Result<(Vec<PathBuf>, Storage)> {
    let mut found: Vec<(PathBuf, Storage)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Storage::of_file(&p).map(|s| (p, s)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let has_mcap = found.iter().any(|(_, s)| *s == Storage::Mcap);
    let storage = storage.unwrap_or(if has_mcap { Storage::Mcap } else { Storage::Sqlite3 });
    Ok((found.into_iter().filter(|(_, s)| *s == storage).map(|(p, _)| p).collect(), storage))
}

impl BagReader {
    /// A bag directory or a single storage file. A directory's `metadata.yaml` names its storage
    /// and lists its files; when it lists none, the files of that storage in the directory are
    /// read in name order, and without a storage named, its `.mcap` files, else its `.db3` files.
    /// A bare file's storage is its extension's, MCAP when the extension says neither.
    pub fn open(path: &Path) -> Result<Self, BagError> {
        let io = |source| BagError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_file() {
            return Ok(Self { files: vec![path.to_path_buf()], storage: Storage::of_file(path).unwrap_or(Storage::Mcap) });
        }
        // A missing or unreadable metadata.yaml leaves the storage files found in the directory.
        let metadata = BagMetadata::read(path).ok();
        let named = metadata
            .as_ref()
            .map(|m| m.storage_identifier.as_str())
            .filter(|id| !id.is_empty())
            .map(|id| {
                Storage::from_id(id).ok_or_else(|| BagError::UnknownStorage { path: path.to_path_buf(), id: id.to_owned() })
            })
            .transpose()?;
        let listed = metadata.map(|m| m.relative_file_paths).unwrap_or_default();
        let (files, storage) = if listed.is_empty() {
            storage_files(path, named).map_err(io)?
        } else {
            let files: Vec<PathBuf> = listed.iter().map(|n| path.join(Path::new(n).file_name().unwrap_or_default())).collect();
            let by_extension = files.iter().find_map(|f| Storage::of_file(f)).unwrap_or(Storage::Mcap);
            (files, named.unwrap_or(by_extension))
        };
        if files.is_empty() {
            return Err(BagError::NoFiles { path: path.to_path_buf() });
        }
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(BagError::Io { path: missing.clone(), source: std::io::ErrorKind::NotFound.into() });
        }
        Ok(Self { files, storage })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Total size of the bag's files in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }

    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Calls `visit` with every message, file by file; within a file in stored order (MCAP) or
    /// in timestamp order (sqlite3, as rosbag2 plays it). Damage ends a file's messages and is
    /// reported; it is not an error.
    pub fn for_each(&self, mut visit: impl FnMut(&RawMessage<'_>)) -> Result<ReadReport, BagError> {
        let mut report = ReadReport::default();
        for path in &self.files {
            match self.storage {
                Storage::Mcap => read_mcap(path, &mut report, &mut visit)?,
                Storage::Sqlite3 => sqlite::read(path, &mut report, &mut visit),
            }
        }
        Ok(report)
    }

    /// Topics, types, counts and time span, like `ros2 bag info`.
    pub fn info(&self) -> Result<BagInfo, BagError> {
        let mut topics: BTreeMap<String, TopicInfo> = BTreeMap::new();
        let (mut start, mut end) = (u64::MAX, 0u64);
        let report = self.for_each(|m| {
            let topic = topics.entry(m.topic.to_owned()).or_insert_with(|| TopicInfo {
                name: m.topic.to_owned(),
                type_name: m.type_name.to_owned(),
                encoding: m.encoding.to_owned(),
                count: 0,
            });
            topic.count += 1;
            start = start.min(m.log_time);
            end = end.max(m.log_time);
        })?;
        Ok(BagInfo {
            storage: self.storage,
            files: self.files.clone(),
            size: self.size(),
            start: (report.messages > 0).then_some(start),
            end: (report.messages > 0).then_some(end),
            topics: topics.into_values().collect(),
            report,
        })
    }
}

/// Reads one MCAP file into `visit`, adding its messages and any damage to `report`.
fn read_mcap(path: &Path, report: &mut ReadReport, visit: &mut impl FnMut(&RawMessage<'_>)) -> Result<(), BagError> {
    let file = File::open(path).map_err(|source| BagError::Io { path: path.to_path_buf(), source })?;
    // SAFETY: the map is read-only; a bag rewritten while it is read gives wrong messages or a
    // decode error, which the reader reports, not undefined behaviour in safe code that only
    // copies out of the slice.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| BagError::Io { path: path.to_path_buf(), source })?;
    if !map.starts_with(mcap::MAGIC) {
        report.damage.push(format!("{}: not an MCAP file (no MCAP magic at its start)", path.display()));
        return Ok(());
    }
    let stream = match mcap::MessageStream::new_with_options(&map, Options::IgnoreEndMagic | Options::ValidateChunkCrcs) {
        Ok(stream) => stream,
        Err(e) => {
            report.damage.push(format!("{}: not an MCAP file ({e})", path.display()));
            return Ok(());
        }
    };
    // Per channel: the full type name and the schema as a definition.
    let mut types: BTreeMap<u16, (String, Option<StoredDefinition>)> = BTreeMap::new();
    let mut in_file = 0u64;
    let mut last_time = None;
    for message in stream {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                let at = last_time.map_or(String::new(), |t| format!(", last log time {t} ns"));
                report.damage.push(format!("{}: stopped after {in_file} messages{at}: {e}", path.display()));
                break;
            }
        };
        let channel = &message.channel;
        let (type_name, definition) = types.entry(channel.id).or_insert_with(|| match &channel.schema {
            Some(schema) => {
                // Empty data is a real definition only as ros2msg (a type without fields, like
                // test_msgs/Empty); rosbag2 writes it empty with another encoding when it had none.
                let definition = (!schema.data.is_empty() || schema.encoding == "ros2msg").then(|| StoredDefinition {
                    encoding: schema.encoding.clone(),
                    text: String::from_utf8_lossy(&schema.data).into_owned(),
                });
                (full_type_name(&schema.name), definition)
            }
            None => (String::new(), None),
        });
        visit(&RawMessage {
            topic: &channel.topic,
            type_name,
            encoding: &channel.message_encoding,
            log_time: message.log_time,
            data: &message.data,
            definition: definition.as_ref(),
        });
        in_file += 1;
        last_time = Some(message.log_time);
    }
    report.messages += in_file;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub type_name: String,
    pub encoding: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BagInfo {
    pub storage: Storage,
    pub files: Vec<PathBuf>,
    pub size: u64,
    /// First and last log time, ns.
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub topics: Vec<TopicInfo>,
    pub report: ReadReport,
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
