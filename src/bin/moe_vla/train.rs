//! `moe_vla train`: episodes from bags -> a model folder, with checkpoints and loss curves. The
//! run itself is `moe_vla::train::train_model`; this draws its progress and prints its summary.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use moe_vla::model::TextKind;
use moe_vla::train::{
    train_model, DataSummary, Objective, OptionsPatch, Recipe, RecipeRecord, Sampling, StepStats, Timeouts, TrainOptions,
    TrainProgress, TrainRun,
};

/// `moe_vla train`'s flags. An option's value comes from its flag if given, else from `--recipe`,
/// else from `TrainOptions::default()`: no flag here has a default of its own.
#[derive(Args)]
pub struct TrainArgs {
    /// A recipe (recipes/default.toml: architecture, options, decision threshold); flags given
    /// beside it override it.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Folder of episode bags (rosbag2 directories, .mcap or .db3 files, searched recursively).
    #[arg(long)]
    data: PathBuf,
    /// Architecture: a preset (tiny, tiny-dense, tiny-streaming, tiny-minilm, germ, germ-full) or a
    /// config.json file (replaces the recipe's).
    #[arg(long, required_unless_present_any = ["resume", "recipe"])]
    config: Option<String>,
    /// Instruction encoder, replacing the architecture's: word_level (a tokenizer trained on the
    /// data's instructions) or minilm (the frozen all-MiniLM-L6-v2 that scripts/setup.sh installs).
    #[arg(long, conflicts_with = "resume", value_parser = clap::value_parser!(TextKind))]
    text: Option<TextKind>,
    /// Discrete BCQ: add a behaviour head and let a bin win an argmax in the Bellman targets only
    /// where the behaviour head finds it at least this share as likely as the likeliest bin (0.3
    /// in Fujimoto et al.); replaces the architecture's setting.
    #[arg(long, conflicts_with = "resume", value_name = "THRESHOLD")]
    behaviour_filter: Option<f64>,
    /// The behaviour filter the trained model decides with, written into its config.json
    /// (default: the recipe's `[decision]`, else the training threshold).
    #[arg(long, value_name = "THRESHOLD")]
    decision_filter: Option<f64>,
    /// Seconds between training steps, recorded in the model's config.json as `frame_period_s`
    /// (replacing the architecture's): the node's history keeps one frame per period. Bags whose
    /// camera runs faster are resampled to it by stamp; the default is the period of `moe_vla
    /// collect`'s bags (the task world's control period).
    #[arg(long, conflicts_with = "resume", value_name = "SECONDS")]
    frame_period: Option<f64>,
    /// Model folder to write (config.json, model.safetensors, tokenizer.json, train.json,
    /// loss.png, checkpoint/).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: OptionFlags,
    /// Save a checkpoint every N updates (and at the end).
    #[arg(long, default_value_t = 250)]
    checkpoint_every: usize,
    /// Stop after this many minutes of training even if --steps is not reached (the schedule
    /// stays planned for --steps); the model and a checkpoint are written either way, so
    /// --resume can continue later.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Continue the run in OUT/checkpoint up to --steps; the other options, the decision threshold
    /// and the recipe record come from it.
    #[arg(long)]
    resume: bool,
    /// Frame cache folder (default: DATA/.cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Start the frame and instruction encoders from this model folder (same architecture there);
    /// the decoder and heads start fresh. With --freeze-encoders-after 0, trains the decoder alone
    /// on that model's perception.
    #[arg(long, value_name = "MODEL")]
    encoders_from: Option<PathBuf>,
    /// Where the updates run: cpu, or cuda / cuda:N (a build with the cuda feature). A fresh run on
    /// a GPU computes each batch whole, in one shard.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads (default: RAYON_NUM_THREADS, else all cores). A fresh run cuts each batch into
    /// this many shards, computed side by side; a resumed run keeps its checkpoint's shards.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    /// Conservative Q-learning with per-dimension Bellman targets (the method).
    Q,
    /// Behaviour cloning: cross-entropy on the recorded bins (the baseline).
    Bc,
    /// IQL-style: Q towards an expectile under the policy head, which clones the data weighted by
    /// exp(advantage) (needs --behaviour-filter; decide with --decision-filter 1).
    Iql,
}

/// The training options' flags (`TrainOptions` documents each; the defaults are its `Default`,
/// recipes/default.toml's values but for the seed).
#[derive(Args)]
struct OptionFlags {
    #[arg(long, value_enum)]
    objective: Option<ObjectiveArg>,
    /// Train on successful episodes only (behaviour cloning on demonstrations).
    #[arg(long)]
    successes_only: bool,
    /// Total gradient updates.
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    warmup: Option<usize>,
    /// Peak learning rate (AdamW, cosine schedule after warm-up).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Discount per control step.
    #[arg(long)]
    gamma: Option<f64>,
    /// EMA rate of the target network.
    #[arg(long)]
    tau: Option<f64>,
    /// Weight of the conservative term (both it and the TD term are per-dimension means).
    #[arg(long)]
    alpha: Option<f64>,
    /// iql: the expectile of Q under the policy head a target takes (0.5 the mean, near 1 the best
    /// bin the policy takes).
    #[arg(long)]
    expectile: Option<f64>,
    /// iql: the policy head's weight on a step is exp(this * advantage), capped and normalised.
    #[arg(long)]
    inverse_temperature: Option<f64>,
    /// Weight of the self-imitation term beside TD (Q-learning): cross-entropy of the data bins
    /// under a softmax of the Q logits, on steps of successful episodes only.
    #[arg(long)]
    imitation_weight: Option<f64>,
    /// Discrete BCQ: the behaviour head learns from the steps of successful episodes only.
    #[arg(long)]
    behaviour_successes_only: bool,
    /// Weight of the load-balancing loss.
    #[arg(long)]
    beta: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// The last action dimension bootstraps from the observation n steps later.
    #[arg(long)]
    n_step: Option<usize>,
    /// At the end of a timed-out episode: terminal (nothing follows) or bootstrap (from its last
    /// observation: the episode was cut short).
    #[arg(long, value_enum)]
    timeouts: Option<Timeouts>,
    /// Batches draw steps (every step alike) or episodes (every episode alike, then a step).
    #[arg(long, value_enum)]
    sampling: Option<Sampling>,
    /// Train end to end for this many updates, then freeze the frame encoder (and the instruction
    /// path) and train the decoder on their cached output; "never" trains end to end throughout.
    #[arg(long, value_parser = parse_freeze, value_name = "UPDATES|never")]
    freeze_encoders_after: Option<Freeze>,
    /// Freeze the instruction path after this many updates, while the frame encoder trains on
    /// until --freeze-encoders-after; "never" freezes it with the other encoders.
    #[arg(long, value_parser = parse_freeze, value_name = "UPDATES|never")]
    freeze_instruction_after: Option<Freeze>,
    /// A bin joins a dimension's supported bins when at least this share of the training steps
    /// takes it.
    #[arg(long)]
    min_bin_share: Option<f64>,
}

/// A freeze flag's value: a number of updates, or never (`None`).
#[derive(Clone, Copy)]
struct Freeze(Option<usize>);

fn parse_freeze(text: &str) -> Result<Freeze, String> {
    match text {
        "never" => Ok(Freeze(None)),
        n => n.parse().map(|n| Freeze(Some(n))).map_err(|_| format!("expected a number of updates or \"never\", got {n:?}")),
    }
}

impl OptionFlags {
    /// The options these flags set.
    fn patch(&self) -> OptionsPatch {
        OptionsPatch {
            objective: self.objective.map(|o| match o {
                ObjectiveArg::Q => Objective::Q,
                ObjectiveArg::Bc => Objective::Bc,
                ObjectiveArg::Iql => Objective::Iql,
            }),
            successes_only: self.successes_only.then_some(true),
            steps: self.steps,
            batch_size: self.batch_size,
            warmup: self.warmup,
            lr: self.lr,
            weight_decay: self.weight_decay,
            gamma: self.gamma,
            tau: self.tau,
            alpha: self.alpha,
            expectile: self.expectile,
            inverse_temperature: self.inverse_temperature,
            imitation_weight: self.imitation_weight,
            behaviour_successes_only: self.behaviour_successes_only.then_some(true),
            beta: self.beta,
            seed: self.seed,
            n_step: self.n_step,
            timeouts: self.timeouts,
            sampling: self.sampling,
            freeze_encoders_after: self.freeze_encoders_after.map(|f| f.0),
            freeze_instruction_after: self.freeze_instruction_after.map(|f| f.0),
            min_bin_share: self.min_bin_share,
        }
    }
}

impl TrainArgs {
    /// The run these flags and their recipe describe: `TrainOptions::default()`, then the
    /// recipe's settings, then the flags'.
    pub fn to_run(&self) -> Result<TrainRun> {
        let recipe = self.recipe.as_ref().map(|path| Recipe::read(path).map(|(r, text)| (path, r, text))).transpose()?;
        let mut options = recipe.as_ref().map_or_else(TrainOptions::default, |(_, r, _)| r.options());
        self.options.patch().apply(&mut options);
        options.shards = moe_vla::train::training_threads(self.threads);
        let architecture = recipe.as_ref().map(|(_, r, _)| &r.architecture);
        Ok(TrainRun {
            data: self.data.clone(),
            config: self.config.clone().or_else(|| recipe.as_ref().map(|(path, r, _)| r.architecture(path))),
            text: self.text.or_else(|| architecture.and_then(|a| a.text)),
            behaviour_filter: self.behaviour_filter.or_else(|| architecture.and_then(|a| a.behaviour_filter)),
            decision_filter: self.decision_filter.or_else(|| recipe.as_ref().and_then(|(_, r, _)| r.decision.behaviour_filter)),
            frame_period: self.frame_period.unwrap_or(moe_vla::sim::CONTROL_PERIOD_NS as f64 / 1e9),
            out: self.out.clone(),
            options,
            recipe: recipe.map(|(path, _, text)| RecipeRecord { path: path.clone(), text }),
            checkpoint_every: self.checkpoint_every,
            max_minutes: self.max_minutes,
            resume: self.resume,
            cache: self.cache.clone(),
            encoders_from: self.encoders_from.clone(),
            device: self.device.clone(),
        })
    }
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

pub fn run(args: TrainArgs) -> Result<()> {
    let run = args.to_run()?;
    let reading = bar(0, "{spinner} reading bags [{bar:40}] {pos}/{len} {elapsed}");
    let mut encoding: Option<ProgressBar> = None;
    let mut training: Option<Training> = None;
    let report = train_model(&run, &mut |event| match event {
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
        run.out.display(),
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
        Objective::Iql => format!(
            "loss {:.4} td {:.4} Q {:.3} target {:.3}",
            mean(|s| s.loss),
            mean(|s| s.main),
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn run(flags: &[&str]) -> TrainRun {
        let mut argv = vec!["moe_vla", "--data", "d", "--out", "m", "--threads", "3"];
        argv.extend(flags);
        Cli::try_parse_from(argv).unwrap().args.to_run().unwrap()
    }

    #[test]
    fn flags_override_the_recipe_and_the_recipe_the_defaults() {
        let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/recipes/default.toml");
        let from_recipe = run(&["--recipe", recipe]);
        assert_eq!(from_recipe.options.seed, 1, "the recipe's");
        assert_eq!(from_recipe.options.steps, 6000);
        assert_eq!(from_recipe.options.shards, 3, "--threads");
        assert_eq!(from_recipe.behaviour_filter, Some(0.3));
        assert_eq!(from_recipe.decision_filter, Some(0.05));
        assert!(from_recipe.config.as_deref().unwrap().ends_with("recipes/../config/tiny-streaming-history6.json"));
        assert_eq!(from_recipe.recipe.as_ref().unwrap().path, std::path::Path::new(recipe));
        let flagged = run(&["--recipe", recipe, "--seed", "2", "--freeze-encoders-after", "never", "--config", "tiny"]);
        assert_eq!(flagged.options.seed, 2, "the flag's");
        assert_eq!(flagged.options.freeze_encoders_after, None);
        assert_eq!(flagged.config.as_deref(), Some("tiny"));
        assert_eq!(flagged.options.steps, 6000, "the recipe's still");
        let bare = run(&["--config", "tiny", "--steps", "7"]);
        assert_eq!(bare.options, TrainOptions { steps: 7, shards: 3, ..TrainOptions::default() }, "the defaults");
        assert_eq!((bare.recipe, bare.decision_filter), (None, None));
    }
}
