//! `moe_vla collect`: episodes of the scripted experts in the task world, one bag each.

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moe_vla::sim::{self, CollectOptions};

/// A bar counting episodes; hidden when stdout is to be one JSON object.
pub fn episode_bar(len: usize, what: &str, hidden: bool) -> ProgressBar {
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

pub fn run(opts: CollectOptions) -> Result<()> {
    if opts.episodes == 0 {
        bail!("--episodes must be positive");
    }
    let progress = episode_bar(opts.episodes, "collecting", false);
    let report = sim::collect(&opts, &|_| progress.inc(1))?;
    progress.finish_and_clear();
    println!(
        "collected {} episodes ({} steps) into {} in {:.1} s: {:.1} episodes/min",
        report.episodes,
        report.steps,
        opts.out.display(),
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
