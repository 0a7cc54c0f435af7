//! `moe_vla bag info` and `moe_vla bag echo`: rosbag2 bags (MCAP, sqlite3) from the command
//! line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use moe_vla::bag::dynamic::MessageDecoder;
use moe_vla::bag::BagReader;
use serde_json::json;

#[derive(Subcommand)]
pub enum BagCommand {
    /// Topics, types, message counts and duration, like `ros2 bag info`.
    Info { bag: PathBuf },
    /// Decoded messages of any type, one JSON object per line, from the definitions the bag
    /// carries (for sqlite3 bags without any: moe_vla's own types). uint8/byte arrays longer
    /// than 64 elements print as their length and CRC32.
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
    println!("Storage id:        {}", info.storage);
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

fn echo(path: &Path, only: Option<&str>) -> Result<()> {
    let bag = BagReader::open(path)?;
    let mut decoder = MessageDecoder::default();
    // Per type: messages there is nothing to decode by, and why.
    let mut skipped: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let report = bag.for_each(|m| {
        if only.is_some_and(|t| t != m.topic) {
            return;
        }
        let line = match decoder.decode(m) {
            Ok(msg) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "msg": msg }),
            Err(e) if e.is_unsupported() => {
                skipped.entry(m.type_name.to_owned()).or_insert_with(|| (0, e.to_string())).0 += 1;
                return;
            }
            Err(e) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "error": e.to_string() }),
        };
        println!("{line}");
    })?;
    if !skipped.is_empty() {
        let total: u64 = skipped.values().map(|(n, _)| n).sum();
        let types: Vec<String> = skipped.iter().map(|(t, (n, why))| format!("{t} ({n}: {why})")).collect();
        eprintln!("skipped {total} messages moe_vla cannot decode: {}", types.join("; "));
    }
    for damage in &report.damage {
        eprintln!("DAMAGED: {damage}");
    }
    Ok(())
}
