//! `moe_vla bag info` and `moe_vla bag echo`: rosbag2 bags (MCAP) from the command line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use moe_vla::bag::msgs::*;
use moe_vla::bag::{decode, BagReader, CdrError};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum BagCommand {
    /// Topics, types, message counts and duration, like `ros2 bag info`.
    Info { bag: PathBuf },
    /// Decoded messages of the types moe_vla knows, one JSON object per line (byte arrays as
    /// their length and CRC32).
    Echo {
        bag: PathBuf,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

pub fn run(command: BagCommand) -> Result<()> {
    match command {
        BagCommand::Info { bag } => info(&bag),
        BagCommand::Echo { bag, topic } => echo(&bag, topic.as_deref()),
    }
}

fn info(path: &Path) -> Result<()> {
    let bag = BagReader::open(path)?;
    let info = bag.info()?;
    let files: Vec<String> = info.files.iter().map(|f| f.display().to_string()).collect();
    println!("Files:             {}", files.join("\n                   "));
    println!("Bag size:          {:.1} MiB", info.size as f64 / (1024.0 * 1024.0));
    println!("Storage id:        mcap");
    let (start, end) = (info.start.unwrap_or(0), info.end.unwrap_or(0));
    println!("Duration:          {:.3}s", end.saturating_sub(start) as f64 * 1e-9);
    println!("Start:             {:.3} (ns since epoch: {start})", start as f64 * 1e-9);
    println!("End:               {:.3} (ns since epoch: {end})", end as f64 * 1e-9);
    println!("Messages:          {}", info.report.messages);
    let width = info.topics.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let type_width = info.topics.iter().map(|t| t.type_name.len()).max().unwrap_or(0);
    for (i, t) in info.topics.iter().enumerate() {
        println!(
            "{}Topic: {:<width$} | Type: {:<type_width$} | Count: {} | Serialization Format: {}",
            if i == 0 { "Topic information: " } else { "                   " },
            t.name,
            t.type_name,
            t.count,
            t.encoding
        );
    }
    for damage in &info.report.damage {
        println!("DAMAGED:           {damage}");
    }
    Ok(())
}

/// A decoded message as JSON, its byte array (if any) as length and CRC32.
fn value<M: RosMessage>(data: &[u8]) -> Result<Value, CdrError> {
    let mut v = serde_json::to_value(decode::<M>(data)?).expect("messages are plain data");
    if let Some(bytes) = v.get("data").and_then(Value::as_array) {
        let bytes: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect();
        v["data"] = json!({ "len": bytes.len(), "crc32": crc32fast::hash(&bytes) });
    }
    Ok(v)
}

fn echo(path: &Path, only: Option<&str>) -> Result<()> {
    let bag = BagReader::open(path)?;
    let mut unknown = 0u64;
    let report = bag.for_each(|m| {
        if only.is_some_and(|t| t != m.topic) {
            return;
        }
        let decoded = match m.type_name {
            Image::TYPE => value::<Image>(m.data),
            CompressedImage::TYPE => value::<CompressedImage>(m.data),
            StringMsg::TYPE => value::<StringMsg>(m.data),
            Twist::TYPE => value::<Twist>(m.data),
            TwistStamped::TYPE => value::<TwistStamped>(m.data),
            GaitCommand::TYPE => value::<GaitCommand>(m.data),
            VlaDecision::TYPE => value::<VlaDecision>(m.data),
            EpisodeOutcome::TYPE => value::<EpisodeOutcome>(m.data),
            Header::TYPE => value::<Header>(m.data),
            _ => {
                unknown += 1;
                return;
            }
        };
        let line = match decoded {
            Ok(msg) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "msg": msg }),
            Err(e) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "error": e.to_string() }),
        };
        println!("{line}");
    })?;
    if unknown > 0 {
        eprintln!("skipped {unknown} messages of types moe_vla does not decode");
    }
    for damage in &report.damage {
        eprintln!("DAMAGED: {damage}");
    }
    Ok(())
}
