//! `moe_vla bag info`, `moe_vla bag echo` and `moe_vla bag episodes`: rosbag2 bags (MCAP,
//! sqlite3) from the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use moe_vla::bag::dynamic::MessageDecoder;
use moe_vla::bag::episode::{digest_episodes, find_bags, EpisodeDigest, Topics};
use moe_vla::bag::BagReader;
use moe_vla::topics;
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
    /// One line per recorded episode (the bags of `collect` and `eval --record`, or any bag with
    /// the episode topics): its outcome and what was commanded on the way (mean and top forward
    /// speed, mean |yaw rate|, when it first crouched, how often it stood up again), then each
    /// family's successes and outcomes.
    Episodes {
        /// Episode bags, or folders searched for them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// One JSON object per episode instead of the table (no summary).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        topics: EpisodeTopics,
    },
}

pub fn run(command: BagCommand) -> Result<()> {
    match command {
        BagCommand::Info { bag } => info(&bag),
        BagCommand::Echo { bag, topic } => echo(&bag, topic.as_deref()),
        BagCommand::Episodes { paths, json, topics } => episodes(&paths, json, &topics.into()),
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

/// Where `bag episodes` finds an episode's messages (the episode format's topics by default).
#[derive(Args)]
pub struct EpisodeTopics {
    #[arg(long, default_value = topics::INSTRUCTION.absolute)]
    instruction_topic: String,
    /// `geometry_msgs/msg/Twist` or `TwistStamped`.
    #[arg(long, default_value = topics::CMD_VEL.absolute)]
    cmd_vel_topic: String,
    #[arg(long, default_value = topics::GAIT_COMMAND.absolute)]
    gait_topic: String,
    /// The policy's decisions, for who decided.
    #[arg(long, default_value = topics::DECISION.absolute)]
    decision_topic: String,
    /// `moe_vla_msgs/msg/EpisodeOutcome`: what ends an episode.
    #[arg(long, default_value = topics::EPISODE_OUTCOME)]
    outcome_topic: String,
}

impl From<EpisodeTopics> for Topics {
    fn from(t: EpisodeTopics) -> Self {
        Topics {
            instruction: t.instruction_topic,
            cmd_vel: t.cmd_vel_topic,
            gait: t.gait_topic,
            decision: t.decision_topic,
            outcome: t.outcome_topic,
            ..Topics::default()
        }
    }
}

/// The bags under `paths` (each a bag or a folder), once each, named relative to the path given.
fn episode_bags(paths: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut seen = BTreeSet::new();
    let mut bags = Vec::new();
    for path in paths {
        let found = if path.is_file() {
            vec![path.clone()]
        } else {
            match find_bags(path) {
                Ok(found) => found,
                Err(e) => {
                    eprintln!("skipped {}: {e}", path.display());
                    continue;
                }
            }
        };
        for bag in found {
            if !seen.insert(bag.canonicalize().unwrap_or_else(|_| bag.clone())) {
                continue;
            }
            let name = match bag.strip_prefix(path) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
                _ => bag.display().to_string(),
            };
            bags.push((name, bag));
        }
    }
    bags
}

fn episodes(paths: &[PathBuf], as_json: bool, topics: &Topics) -> Result<()> {
    let bags = episode_bags(paths);
    anyhow::ensure!(
        !bags.is_empty(),
        "no bags under {}",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    let mut all: Vec<(String, EpisodeDigest)> = Vec::new();
    for (name, bag) in &bags {
        let digest = match digest_episodes(bag, topics) {
            Ok(digest) => digest,
            Err(e) => {
                eprintln!("skipped {}: {e}", bag.display());
                continue;
            }
        };
        for damage in &digest.damage {
            eprintln!("DAMAGED: {}: {damage}", bag.display());
        }
        if digest.episodes.is_empty() {
            eprintln!("{}: no episodes (none ended by an outcome on {})", bag.display(), topics.outcome);
        } else if digest.episodes.iter().all(|d| d.commands == 0) {
            eprintln!("{}: no commands on {}", bag.display(), topics.cmd_vel);
        }
        if digest.unfinished {
            eprintln!("{}: the last episode has no outcome and is left out", bag.display());
        }
        all.extend(digest.episodes.into_iter().map(|d| (name.clone(), d)));
    }
    anyhow::ensure!(!all.is_empty(), "no episodes in {} bag(s)", bags.len());
    if as_json {
        for (bag, d) in &all {
            let mut line = serde_json::to_value(d)?;
            line["bag"] = json!(bag);
            println!("{line}");
        }
        return Ok(());
    }
    let width = all.iter().map(|(b, _)| b.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<width$}  {:<11} {:<8} {:<16} {:>5}  {:>12}  {:>5}  {:>8}  {:>9}  driver",
        "bag", "family", "held-out", "outcome", "steps", "fwd mean/max", "|yaw|", "crouch s", "stand-ups"
    );
    let number = |v: Option<f32>, width: usize| v.map_or_else(|| format!("{:>width$}", "-"), |v| format!("{v:>width$.2}"));
    for (bag, d) in &all {
        let speeds = format!("{}/{}", number(d.mean_forward, 5), number(d.max_forward, 0));
        let crouch = d.first_crouch_s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "{bag:<width$}  {:<11} {:<8} {:<16} {:>5}  {speeds:<12}  {}  {crouch:>8}  {:>9}  {}",
            d.family,
            if d.held_out { "yes" } else { "no" },
            d.reason,
            d.steps,
            number(d.mean_abs_yaw, 5),
            d.stand_ups,
            d.driver
        );
    }
    // Per family: episodes, successes and the reasons episodes ended.
    let mut families: BTreeMap<&str, (usize, usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for (_, d) in &all {
        let entry = families.entry(d.family.as_str()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(d.success);
        *entry.2.entry(d.reason.as_str()).or_default() += 1;
    }
    println!();
    println!("{:<11} {:>8}  {:>7}  outcomes", "family", "episodes", "success");
    for (family, (n, successes, reasons)) in &families {
        let reasons: Vec<String> = reasons.iter().map(|(r, k)| format!("{r} {k}")).collect();
        println!("{family:<11} {n:>8}  {:>6.1}%  {}", 100.0 * *successes as f64 / *n as f64, reasons.join(", "));
    }
    Ok(())
}
