//! `moe_vla train`: episodes from bags -> a model folder, with checkpoints and loss curves. The
//! run itself is `moe_vla::train::train_model`; this draws its progress and prints its summary.

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moe_vla::train::{train_model, DataSummary, Objective, StepStats, TrainProgress, TrainRun};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: TrainRun,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores). A fresh run cuts each batch into
    /// this many shards, computed side by side; a resumed run keeps its checkpoint's shards.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: Option<usize>,
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

/// The bar of the updates, and what its messages need.
struct Training {
    bar: ProgressBar,
    steps: usize,
    objective: Objective,
}

pub fn run(mut args: TrainArgs) -> Result<()> {
    args.run.options.shards = moe_vla::train::training_threads(args.threads);
    let reading = bar(0, "{spinner} reading bags [{bar:40}] {pos}/{len} {elapsed}");
    let mut encoding: Option<ProgressBar> = None;
    let mut training: Option<Training> = None;
    let report = train_model(&args.run, &mut |event| match event {
        TrainProgress::Reading { done, total } => {
            reading.set_length(total as u64);
            reading.set_position(done as u64);
        }
        TrainProgress::Data(data) => {
            reading.finish_and_clear();
            print_data(data);
        }
        TrainProgress::Training { first_step, steps, objective, supported_bins } => {
            eprintln!("supported bins per dimension: {supported_bins:?}");
            let bar = bar(steps as u64, "{spinner} training [{bar:30}] {pos}/{len} {per_sec} {elapsed} (eta {eta}) {msg}");
            bar.set_position(first_step as u64);
            training = Some(Training { bar, steps, objective });
        }
        TrainProgress::Encoding { done, total } => {
            let bar = encoding.get_or_insert_with(|| {
                bar(0, "{spinner} encoders frozen: caching their output [{bar:30}] {pos}/{len} episodes {elapsed}")
            });
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        TrainProgress::Encoded { update, steps, seconds } => {
            if let Some(bar) = encoding.take() {
                bar.finish_and_clear();
            }
            tracing::info!("encoders frozen at update {update}: cached {steps} steps in {seconds:.1} s");
        }
        TrainProgress::Update { updates, recent } => {
            let Some(training) = &training else { return };
            let message = progress_message(training.objective, recent);
            // Without a terminal (CI, nohup) the bar is hidden: a log line now and then instead.
            if training.bar.is_hidden() && updates % 50 == 0 {
                tracing::info!("update {updates}/{}: {message}", training.steps);
            }
            training.bar.set_message(message);
            training.bar.inc(1);
        }
    })?;
    if let Some(training) = training {
        training.bar.finish();
    }
    println!(
        "trained {} updates in {:.0} s ({:.1} samples/s); wrote {} ({} parameters)",
        report.updates,
        report.seconds,
        report.samples_per_second,
        args.run.out.display(),
        report.params.total
    );
    Ok(())
}

fn print_data(data: &DataSummary) {
    for skipped in &data.skipped {
        tracing::warn!("skipped {skipped}");
    }
    eprintln!(
        "data: {} episodes ({} successful), {} steps, {} used; read in {:.1} s",
        data.episodes, data.successful_episodes, data.steps, data.steps_used, data.read_seconds
    );
    if data.frames != data.steps {
        eprintln!("  {} camera frames resampled to one step per {} s", data.frames, data.frame_period_s);
    }
    for (family, (n, ok)) in &data.families {
        eprintln!("  {family:<12} {n:>5} episodes, {:>5.1} % successful", 100.0 * *ok as f64 / (*n).max(1) as f64);
    }
}

/// The recent updates' mean losses and Q values.
fn progress_message(objective: Objective, recent: &[StepStats]) -> String {
    let mean = |f: fn(&StepStats) -> f32| recent.iter().map(f).sum::<f32>() / recent.len() as f32;
    let message = match objective {
        Objective::Q => format!(
            "loss {:.4} td {:.4} cql {:.4} imitation {:.3} Q {:.3} target {:.3}",
            mean(|s| s.loss),
            mean(|s| s.main),
            mean(|s| s.conservative),
            mean(|s| s.imitation),
            mean(|s| s.q_data),
            mean(|s| s.q_target)
        ),
        Objective::Bc => format!("loss {:.4} ce {:.4} balance {:.3}", mean(|s| s.loss), mean(|s| s.main), mean(|s| s.balance)),
    };
    let behaviour = mean(|s| s.behaviour);
    if behaviour == 0.0 {
        message
    } else {
        format!("{message} behaviour {behaviour:.3}")
    }
}
