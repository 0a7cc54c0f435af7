//! Reading rosbag2 bags: a directory with `metadata.yaml` and its storage files, or a bare
//! storage file, each file read by its storage backend ([`super::storage`]: MCAP or rosbag2's
//! sqlite3). A truncated file or a damaged chunk or page is read as far as it goes, and the
//! report says where it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::storage::{self, RawMessage, ReadFile, ReadReport, Storage};
use super::{BagError, BagMetadata};

pub struct BagReader {
    files: Vec<PathBuf>,
    storage: Storage,
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
        let read_file: ReadFile = match self.storage {
            Storage::Mcap => storage::mcap::read,
            Storage::Sqlite3 => storage::sqlite3::read,
        };
        for path in &self.files {
            read_file(path, &mut report, &mut visit)?;
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
