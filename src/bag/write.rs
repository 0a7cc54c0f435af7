//! Writing rosbag2 bags: one MCAP file with the `ros2` profile (`ros2msg` schemas, `cdr`
//! messages, `offered_qos_profiles` channel metadata) and a rosbag2 `metadata.yaml`. Nothing in
//! the output depends on the wall clock, so the same messages give the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::cdr::encode;
use super::metadata::{Duration, FileInformation, Time, TopicMetadata, TopicWithMessageCount};
use super::msgs::RosMessage;
use super::{BagError, BagMetadata};

/// The QoS a topic was offered with, as rosbag2 records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicQos {
    /// reliable, volatile, keep last 10
    Reliable,
    /// reliable, transient local, keep last 1
    Latched,
    /// best effort, volatile, keep last 1
    SensorData,
}

impl TopicQos {
    fn yaml(self) -> String {
        // rosbag2's enum numbers: history 1 = keep last; reliability 1 = reliable, 2 = best
        // effort; durability 1 = transient local, 2 = volatile; liveliness 1 = automatic.
        let (depth, reliability, durability) = match self {
            Self::Reliable => (10, 1, 2),
            Self::Latched => (1, 1, 1),
            Self::SensorData => (1, 2, 2),
        };
        let infinite = "\n    sec: 2147483647\n    nsec: 4294967295";
        format!(
            "- history: 1\n  depth: {depth}\n  reliability: {reliability}\n  durability: {durability}\n  \
             deadline:{infinite}\n  lifespan:{infinite}\n  liveliness: 1\n  liveliness_lease_duration:{infinite}\n  \
             avoid_ros_namespace_conventions: false"
        )
    }
}

struct Topic {
    channel: u16,
    type_name: &'static str,
    qos: TopicQos,
    count: u64,
}

pub struct BagWriter {
    dir: PathBuf,
    file_name: String,
    mcap: mcap::Writer<BufWriter<File>>,
    topics: BTreeMap<String, Topic>,
    /// First and last log time written, ns.
    span: Option<(u64, u64)>,
    sequence: u32,
}

impl BagWriter {
    /// Creates the bag directory `dir` (which must not exist yet, as with `ros2 bag record -o`).
    pub fn create(dir: &Path) -> Result<Self, BagError> {
        if dir.exists() {
            return Err(BagError::Exists { path: dir.to_path_buf() });
        }
        let io = |source| BagError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let name = dir.file_name().map_or_else(|| "bag".into(), |n| n.to_string_lossy().into_owned());
        let file_name = format!("{name}_0.mcap");
        let file = File::create(dir.join(&file_name)).map_err(io)?;
        let mcap = mcap::WriteOptions::new()
            .profile("ros2")
            .library(concat!("moe_vla ", env!("CARGO_PKG_VERSION")))
            .compression(Some(mcap::Compression::Zstd))
            .create(BufWriter::new(file))
            .map_err(|e| BagError::Write { path: dir.to_path_buf(), reason: e.to_string() })?;
        Ok(Self { dir: dir.to_path_buf(), file_name, mcap, topics: BTreeMap::new(), span: None, sequence: 0 })
    }

    fn err(&self, e: impl std::fmt::Display) -> BagError {
        BagError::Write { path: self.dir.clone(), reason: e.to_string() }
    }

    /// Declares `topic` with message type `M`; declaring it again is a no-op.
    pub fn add_topic<M: RosMessage>(&mut self, topic: &str, qos: TopicQos) -> Result<(), BagError> {
        if let Some(existing) = self.topics.get(topic) {
            if existing.type_name != M::TYPE {
                return Err(self.err(format!("{topic} is already {}, not {}", existing.type_name, M::TYPE)));
            }
            return Ok(());
        }
        let schema = self.mcap.add_schema(M::TYPE, "ros2msg", M::definition().as_bytes()).map_err(|e| self.err(e))?;
        let metadata = BTreeMap::from([("offered_qos_profiles".to_owned(), qos.yaml())]);
        let channel = self.mcap.add_channel(schema, topic, "cdr", &metadata).map_err(|e| self.err(e))?;
        self.topics.insert(topic.to_owned(), Topic { channel, type_name: M::TYPE, qos, count: 0 });
        Ok(())
    }

    /// Writes `msg` on a declared topic at log time `time_ns`.
    pub fn write<M: RosMessage>(&mut self, topic: &str, time_ns: u64, msg: &M) -> Result<(), BagError> {
        let data = encode(msg).map_err(|e| self.err(e))?;
        let Some(entry) = self.topics.get_mut(topic) else {
            return Err(self.err(format!("topic {topic} was not declared")));
        };
        if entry.type_name != M::TYPE {
            return Err(BagError::Write {
                path: self.dir.clone(),
                reason: format!("{topic} is {}, not {}", entry.type_name, M::TYPE),
            });
        }
        entry.count += 1;
        let header = mcap::records::MessageHeader {
            channel_id: entry.channel,
            sequence: self.sequence,
            log_time: time_ns,
            publish_time: time_ns,
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.span = Some(self.span.map_or((time_ns, time_ns), |(a, b)| (a.min(time_ns), b.max(time_ns))));
        self.mcap.write_to_known_channel(&header, &data).map_err(|e| self.err(e))
    }

    /// Closes the MCAP file and writes `metadata.yaml`; returns the bag directory.
    pub fn finish(mut self) -> Result<PathBuf, BagError> {
        self.mcap.finish().map_err(|e| self.err(e))?;
        let (start, end) = self.span.unwrap_or((0, 0));
        let (starting_time, duration) = (Time { nanoseconds_since_epoch: start }, Duration { nanoseconds: end - start });
        let message_count: u64 = self.topics.values().map(|t| t.count).sum();
        let topics_with_message_count = self
            .topics
            .iter()
            .map(|(name, topic)| TopicWithMessageCount {
                topic_metadata: TopicMetadata {
                    name: name.clone(),
                    type_name: topic.type_name.to_owned(),
                    serialization_format: "cdr".to_owned(),
                    offered_qos_profiles: topic.qos.yaml().into(),
                    type_description_hash: None,
                },
                message_count: topic.count,
            })
            .collect();
        let metadata = BagMetadata {
            // Version 5 (QoS profiles as one YAML string): what rosbag2 and rosbags have read from these bags.
            version: 5,
            storage_identifier: "mcap".to_owned(),
            duration,
            starting_time,
            message_count,
            topics_with_message_count,
            compression_format: String::new(),
            compression_mode: String::new(),
            relative_file_paths: vec![self.file_name.clone()],
            files: vec![FileInformation { path: self.file_name.clone(), starting_time, duration, message_count }],
            custom_data: None,
            ros_distro: None,
        };
        metadata.write(&self.dir)?;
        Ok(self.dir)
    }
}
