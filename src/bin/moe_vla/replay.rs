//! `moe_vla replay`: a bag's frames and instructions through the node's controller, on bag time.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moe_vla::bag::{BagReader, BagWriter};
use moe_vla::control::{ControlConfig, ControlParams};
use moe_vla::policy::Policy;
use moe_vla::replay::ReplayOptions;

#[derive(Args)]
pub struct ReplayArgs {
    /// Input bag: a rosbag2 directory or a .mcap file.
    #[arg(long)]
    bag: PathBuf,
    #[arg(long)]
    model: PathBuf,
    /// Output bag directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: ReplayOptions,
    /// The node's parameter file (its control rate, timeout and limits apply).
    #[arg(long)]
    params_file: Option<PathBuf>,
    /// CPU threads for inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let mut policy = Policy::load(&args.model, &Device::Cpu)?;
    if let Some(threads) = args.threads {
        policy.set_threads(threads)?;
    }
    let mut opts = args.options;
    if let Some(path) = &args.params_file {
        opts.control = control_from_params_file(path)?;
    }
    let bag = BagReader::open(&args.bag)?;
    let mut out = BagWriter::create(&args.out)?;
    let bar = ProgressBar::new(bag.size()).with_style(
        ProgressStyle::with_template("{spinner} replaying [{bar:40}] {bytes}/{total_bytes} {elapsed} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if args.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let summary = moe_vla::replay::replay(&bag, &mut policy, &opts, &mut out, |bytes| bar.inc(bytes))?;
    bar.finish_and_clear();
    let dir = out.finish()?;
    let ms = |q| summary.latency.quantile(q).unwrap_or(f32::NAN);
    let c = &summary.counters;
    if args.json {
        let stops: serde_json::Map<String, serde_json::Value> =
            c.stops.iter().map(|(k, (n, _))| (k.to_string(), (*n).into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "out": dir, "messages": summary.read.messages, "damage": summary.read.damage,
                "frames": c.frames, "bad_frames": c.bad_frames,
                "instructions": c.instructions, "bad_instructions": c.bad_instructions,
                "decisions": c.decisions, "failed_decisions": c.failed_decisions, "stale_decisions": c.stale_decisions,
                "commands": c.commands, "skipped": summary.skipped, "stops": stops,
                "latency_median_ms": ms(0.5), "latency_p99_ms": ms(0.99),
            })
        );
        return Ok(());
    }
    if !policy.config().trained {
        println!("UNTRAINED model: its commands are meaningless");
    }
    println!("replayed {} -> {}", args.bag.display(), dir.display());
    println!(
        "  messages read  {} over {:.2} s",
        summary.read.messages,
        (summary.span.1.saturating_sub(summary.span.0)) as f64 * 1e-9
    );
    for damage in &summary.read.damage {
        println!("  DAMAGED        {damage}");
    }
    println!("  frames         {} ({} unusable)", c.frames, c.bad_frames);
    println!("  instructions   {} ({} rejected)", c.instructions, c.bad_instructions);
    println!("  decisions      {} ({} failed)", c.decisions, c.failed_decisions);
    println!("  commands       {}", c.commands);
    for (topic, n) in &summary.skipped {
        println!("  skipped        {n} on {topic}");
    }
    for (kind, (n, text)) in &c.stops {
        println!("  stops          {n} x {kind}: {text}");
    }
    println!("  decision latency (wall clock) median {:.1} ms, p99 {:.1} ms", ms(0.5), ms(0.99));
    Ok(())
}

/// The control settings of a moe_vla_node parameter file (`/**` or `moe_vla_node` section); the
/// node's other parameters are not the controller's and are skipped.
fn control_from_params_file(path: &Path) -> Result<ControlConfig> {
    use serde_yaml_ng::Value as Yaml;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Yaml = serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    if doc.is_null() {
        bail!("empty parameter file");
    }
    let params = ["/**", "moe_vla_node", "/moe_vla_node"]
        .iter()
        .find_map(|section| doc.get(section)?.get("ros__parameters"))
        .with_context(|| format!("{} has no /** or moe_vla_node ros__parameters", path.display()))?;
    let Some(entries) = params.as_mapping() else {
        bail!("{}: ros__parameters is not a mapping", path.display());
    };
    let mut values = serde_json::Map::new();
    for (key, value) in entries {
        // Only scalars can be control parameters.
        let (Some(name), Yaml::Number(_) | Yaml::Bool(_) | Yaml::String(_)) = (key.as_str(), value) else { continue };
        values.insert(name.to_owned(), serde_json::to_value(value)?);
    }
    let known = serde_json::to_value(ControlParams::default())?;
    values.retain(|name, _| known.get(name).is_some());
    let params: ControlParams = serde_json::from_value(serde_json::Value::Object(values))
        .with_context(|| format!("{}: a control parameter has the wrong type", path.display()))?;
    Ok(params.to_config())
}
