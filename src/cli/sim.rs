//! `moe_vla collect` and `moe_vla eval`: the task world from the command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moe_vla::action::ActionSpace;
use moe_vla::model::config::quadruped_action_space;
use moe_vla::policy::Policy;
use moe_vla::sim::{self, CleanExpert, CollectOptions, Driver, EvalOptions, RandomDriver, TaskFamily};

#[derive(Args)]
pub struct CollectArgs {
    #[arg(long)]
    episodes: usize,
    /// Folder for the episode bags (episode_NNNNNN/) and collect.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Camera frames are IMAGE_SIZE x IMAGE_SIZE rgb8.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// Comma-separated task families, taken round-robin (default: all six).
    #[arg(long, value_delimiter = ',')]
    families: Option<Vec<String>>,
    /// Episodes simulated in parallel (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

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
    #[arg(long, default_value_t = 60)]
    episodes: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "model")]
    policy: PolicyKind,
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// CPU threads for inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

fn bar(len: usize, what: &str, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} episodes {{elapsed}} (eta {{eta}}) {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_draw_target(if hidden { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    bar
}

pub fn collect(args: CollectArgs) -> Result<()> {
    if args.episodes == 0 {
        bail!("--episodes must be positive");
    }
    let families = match &args.families {
        Some(names) => names.iter().map(|n| n.trim().parse()).collect::<Result<Vec<TaskFamily>, _>>()?,
        None => TaskFamily::ALL.to_vec(),
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = CollectOptions {
        out: args.out.clone(),
        episodes: args.episodes,
        seed: args.seed,
        image_size: args.image_size,
        families,
        threads,
    };
    let progress = bar(args.episodes, "collecting", false);
    let report = sim::collect(&opts, &|_| progress.inc(1))?;
    progress.finish_and_clear();
    println!(
        "collected {} episodes ({} steps) into {} in {:.1} s: {:.1} episodes/min",
        report.episodes,
        report.steps,
        args.out.display(),
        report.seconds,
        report.episodes_per_s * 60.0
    );
    println!("{:<12} {:>8} {:>8}  outcomes", "family", "episodes", "success");
    for (family, c) in report.per_family.iter().chain([(&"all".to_string(), &report.all)]) {
        let outcomes: Vec<String> = c.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{family:<12} {:>8} {:>7.1}%  {}", c.episodes, 100.0 * c.success_rate(), outcomes.join(", "));
    }
    Ok(())
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let mut policy;
    let mut random;
    let mut expert;
    let driver: &mut dyn Driver = match args.policy {
        PolicyKind::Model => {
            let dir = args.model.as_ref().context("--model is required with --policy model")?;
            policy = Policy::load(dir, &Device::Cpu)?;
            if let Some(threads) = args.threads {
                policy.set_threads(threads)?;
            }
            if !policy.config().trained && !args.json {
                eprintln!("note: {} is an UNTRAINED model", dir.display());
            }
            &mut policy
        }
        PolicyKind::Random => {
            random = RandomDriver::new(ActionSpace::new(&quadruped_action_space())?, args.seed);
            &mut random
        }
        PolicyKind::Expert => {
            expert = CleanExpert::new(ActionSpace::new(&quadruped_action_space())?);
            &mut expert
        }
    };
    let progress = bar(args.episodes, "evaluating", args.json);
    let opts = EvalOptions { episodes: args.episodes, seed: args.seed, image_size: args.image_size };
    let (mut done, mut successes) = (0u64, 0u64);
    let report = sim::evaluate(driver, &opts, &mut |s| {
        done += 1;
        successes += u64::from(s.outcome.success);
        progress.inc(1);
        progress.set_message(format!("success {:.0}%", 100.0 * successes as f64 / done as f64));
    })?;
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
