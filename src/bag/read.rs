//! Reading rosbag2 bags: a directory with `metadata.yaml` and `.mcap` files, or a bare `.mcap`.
//! A truncated file or a damaged chunk is read as far as it goes, and the report says where it
//! stopped.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use mcap::read::Options;

use super::{BagError, BagMetadata};

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
}

/// How far reading got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    pub messages: u64,
    /// Why and where reading stopped early, per damaged file.
    pub damage: Vec<String>,
}

pub struct BagReader {
    files: Vec<PathBuf>,
}

/// `pkg/Type` -> `pkg/msg/Type`; full names stay as they are. Bags from before the messages
/// moved to their own package (`moe_vla/msg/...`) read as `moe_vla_msgs/msg/...`.
fn full_type_name(name: &str) -> String {
    let full = match name.split('/').collect::<Vec<_>>().as_slice() {
        [pkg, ty] => format!("{pkg}/msg/{ty}"),
        _ => name.to_owned(),
    };
    match full.strip_prefix("moe_vla/msg/") {
        Some(ty) => format!("moe_vla_msgs/msg/{ty}"),
        None => full,
    }
}

impl BagReader {
    /// A bag directory (its `metadata.yaml` lists the files; without one, every `.mcap` in it,
    /// in name order) or a single `.mcap` file.
    pub fn open(path: &Path) -> Result<Self, BagError> {
        let io = |source| BagError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_file() {
            return Ok(Self { files: vec![path.to_path_buf()] });
        }
        // A missing or unreadable metadata.yaml, or one that lists no files, leaves the .mcap files.
        let listed = BagMetadata::read(path).map(|m| m.relative_file_paths).unwrap_or_default();
        let files: Vec<PathBuf> = if listed.is_empty() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "mcap"))
                .collect();
            found.sort();
            found
        } else {
            listed.iter().map(|n| path.join(Path::new(n).file_name().unwrap_or_default())).collect()
        };
        if files.is_empty() {
            return Err(BagError::NoFiles { path: path.to_path_buf() });
        }
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(BagError::Io { path: missing.clone(), source: std::io::ErrorKind::NotFound.into() });
        }
        Ok(Self { files })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Total size of the bag's files in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
    }

    /// Calls `visit` with every message, file by file in stored order. Damage ends a file's
    /// messages and is reported; it is not an error.
    pub fn for_each(&self, mut visit: impl FnMut(&RawMessage<'_>)) -> Result<ReadReport, BagError> {
        let mut report = ReadReport::default();
        for path in &self.files {
            let file = File::open(path).map_err(|source| BagError::Io { path: path.clone(), source })?;
            // SAFETY: the map is read-only; a bag rewritten while it is read gives wrong
            // messages or a decode error, which the reader reports, not undefined behaviour in
            // safe code that only copies out of the slice.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| BagError::Io { path: path.clone(), source })?;
            if !map.starts_with(mcap::MAGIC) {
                report.damage.push(format!("{}: not an MCAP file (no MCAP magic at its start)", path.display()));
                continue;
            }
            let stream = match mcap::MessageStream::new_with_options(&map, Options::IgnoreEndMagic | Options::ValidateChunkCrcs) {
                Ok(stream) => stream,
                Err(e) => {
                    report.damage.push(format!("{}: not an MCAP file ({e})", path.display()));
                    continue;
                }
            };
            let mut types: BTreeMap<u16, String> = BTreeMap::new();
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
                let type_name = types
                    .entry(channel.id)
                    .or_insert_with(|| channel.schema.as_ref().map_or_else(String::new, |s| full_type_name(&s.name)));
                visit(&RawMessage {
                    topic: &channel.topic,
                    type_name,
                    encoding: &channel.message_encoding,
                    log_time: message.log_time,
                    data: &message.data,
                });
                in_file += 1;
                last_time = Some(message.log_time);
            }
            report.messages += in_file;
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
            files: self.files.clone(),
            size: self.size(),
            start: (report.messages > 0).then_some(start),
            end: (report.messages > 0).then_some(end),
            topics: topics.into_values().collect(),
            report,
        })
    }
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
