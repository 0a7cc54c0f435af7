//! `moe_vla eval`: closed-loop success rates in the task world, through the node's controller.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use moe_vla::action::ActionSpace;
use moe_vla::model::config::quadruped_action_space;
use moe_vla::policy::Policy;
use moe_vla::sim::{self, CleanExpert, EpisodeSummary, EvalOptions, RandomDriver, StyleKind, TaskFamily};

use crate::collect::episode_bar;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// The network in --model.
    Model,
    /// A uniformly random valid bin per dimension.
    Random,
    /// The noiseless scripted expert, which reads the world's privileged state: the ceiling.
    Expert,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Model folder (required with --policy model).
    #[arg(long, required_if_eq("policy", "model"))]
    model: Option<PathBuf>,
    #[command(flatten)]
    options: EvalOptions,
    #[arg(long, value_enum, default_value = "model")]
    policy: PolicyKind,
    /// With --policy expert: the noiseless expert of this style (the mixed data design's styles
    /// scored alone).
    #[arg(long, value_enum, default_value = "clean")]
    style: StyleKind,
    /// CPU threads for inference, per episode played at a time (default: the cores divided
    /// among --jobs).
    #[arg(long)]
    threads: Option<usize>,
    /// Episodes played side by side, each with its own copy of the policy: faster where the
    /// world's simulation fills the cores (the physics world). The report is the same.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let opts = &args.options;
    let jobs = usize::from(args.jobs);
    let progress = episode_bar(opts.played().len(), "evaluating", args.json);
    let successes = AtomicU64::new(0);
    let on_episode = |s: &EpisodeSummary| {
        let successes = successes.fetch_add(u64::from(s.outcome.success), Ordering::Relaxed) + u64::from(s.outcome.success);
        progress.inc(1);
        progress.set_message(format!("success {:.0}%", 100.0 * successes as f64 / progress.position().max(1) as f64));
    };
    let report = match args.policy {
        PolicyKind::Model => {
            let dir = args.model.as_ref().context("--model is required with --policy model")?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads = args.threads.unwrap_or((cores / jobs).max(1));
            let mut policies = Vec::with_capacity(jobs);
            for _ in 0..jobs {
                let mut policy = Policy::load(dir, &Device::Cpu)?;
                policy.set_threads(threads)?;
                policies.push(policy);
            }
            if !policies[0].config().trained && !args.json {
                eprintln!("note: {} is an UNTRAINED model", dir.display());
            }
            sim::evaluate_side_by_side(&mut policies, opts, &on_episode)?
        }
        PolicyKind::Random => {
            let space = ActionSpace::new(&quadruped_action_space())?;
            let mut drivers: Vec<RandomDriver> = (0..jobs).map(|_| RandomDriver::new(space.clone(), opts.seed)).collect();
            sim::evaluate_side_by_side(&mut drivers, opts, &on_episode)?
        }
        PolicyKind::Expert => {
            let space = ActionSpace::new(&quadruped_action_space())?;
            let mut drivers: Vec<CleanExpert> = (0..jobs).map(|_| CleanExpert::styled(space.clone(), args.style)).collect();
            sim::evaluate_side_by_side(&mut drivers, opts, &on_episode)?
        }
    };
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("policy {} | {} episodes | seed {}", report.policy, report.episodes, report.seed);
    println!("{:<12} {:>8} {:>9} {:>8}", "family", "seen", "held-out", "all");
    let pct = |v: Option<&f64>| v.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", 100.0 * r));
    for family in TaskFamily::ALL {
        let name = family.name();
        if report.per_family.contains_key(name) {
            println!(
                "{name:<12} {:>8} {:>9} {:>8}",
                pct(report.per_family_seen.get(name)),
                pct(report.per_family_held_out.get(name)),
                pct(report.per_family.get(name))
            );
        }
    }
    let held = (!report.per_family_held_out.is_empty()).then_some(&report.held_out_success_rate);
    println!(
        "{:<12} {:>8} {:>9} {:>8}",
        "overall",
        pct(Some(&report.seen_success_rate)),
        pct(held),
        pct(Some(&report.success_rate))
    );
    let outcomes: Vec<String> = report.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("outcomes: {}", outcomes.join(", "));
    Ok(())
}
