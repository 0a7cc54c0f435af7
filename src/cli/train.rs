//! `moe_vla train`: episodes from bags -> a model folder, with checkpoints and loss curves.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moe_vla::action::{supported_ranges, ActionSpace};
use moe_vla::model::{count_params, save_weights, VlaConfig};
use moe_vla::policy::tokenize::train_word_level;
use moe_vla::policy::{InstructionTokenizer, Policy, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use moe_vla::train::optim::AdamWConfig;
use moe_vla::train::{data, plot, Batcher, Dataset, Objective, StepStats, Topics, TrainOptions, Trainer};

#[derive(Args)]
pub struct TrainArgs {
    /// Folder of episode bags (rosbag2 directories or .mcap files, searched recursively).
    #[arg(long)]
    data: PathBuf,
    /// Architecture: a preset (tiny, germ) or a config.json file.
    #[arg(long, required_unless_present = "resume")]
    config: Option<String>,
    /// Model folder to write (config.json, model.safetensors, tokenizer.json, train.json,
    /// loss.png, checkpoint/).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "q")]
    objective: Objective,
    /// Train on successful episodes only (behaviour cloning on demonstrations).
    #[arg(long)]
    successes_only: bool,
    /// Total gradient updates.
    #[arg(long, default_value_t = TrainOptions::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate (AdamW, cosine schedule after warm-up).
    #[arg(long, default_value_t = TrainOptions::default().adamw.lr)]
    lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().warmup)]
    warmup: usize,
    #[arg(long, default_value_t = TrainOptions::default().adamw.weight_decay)]
    weight_decay: f64,
    /// Weight of the conservative term (both it and the TD term are per-dimension means).
    #[arg(long, default_value_t = TrainOptions::default().alpha)]
    alpha: f64,
    /// Weight of the load-balancing loss.
    #[arg(long, default_value_t = TrainOptions::default().beta)]
    beta: f64,
    /// Discount per control step.
    #[arg(long, default_value_t = TrainOptions::default().gamma)]
    gamma: f64,
    /// EMA rate of the target network.
    #[arg(long, default_value_t = TrainOptions::default().tau)]
    tau: f64,
    /// The last action dimension bootstraps from the observation n steps later.
    #[arg(long, default_value_t = TrainOptions::default().n_step)]
    n_step: usize,
    /// Train end to end for this many updates, then freeze the instruction and frame encoders
    /// and train the decoder on their cached output (much faster); "never" trains end to end
    /// throughout.
    #[arg(long, default_value_t = Freeze(TrainOptions::default().freeze_encoders_after), value_parser = parse_freeze)]
    freeze_encoders_after: Freeze,
    /// A bin joins a dimension's supported bins (the only ones targets maximise over and the
    /// policy chooses from) when at least this share of the training steps takes it.
    #[arg(long, default_value_t = TrainOptions::default().min_bin_share)]
    min_bin_share: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint every N updates (and at the end).
    #[arg(long, default_value_t = 250)]
    checkpoint_every: usize,
    /// Stop after this many minutes of training even if --steps is not reached (the schedule
    /// stays planned for --steps); the model and a checkpoint are written either way, so
    /// --resume can continue later.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Continue the run in OUT/checkpoint up to --steps; the other options come from it.
    #[arg(long)]
    resume: bool,
    /// Frame cache folder (default: DATA/.cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// `--freeze-encoders-after`: a number of updates, or never.
#[derive(Debug, Clone, Copy)]
pub struct Freeze(Option<usize>);

impl std::fmt::Display for Freeze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "never"),
        }
    }
}

fn parse_freeze(text: &str) -> Result<Freeze, String> {
    match text {
        "never" => Ok(Freeze(None)),
        n => n.parse().map(|n| Freeze(Some(n))).map_err(|_| format!("expected a number of updates or \"never\", got {n:?}")),
    }
}

impl TrainArgs {
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }
}

fn read_architecture(spec: &str) -> Result<VlaConfig> {
    let path = Path::new(spec);
    if path.is_file() {
        let cfg = moe_vla::policy::read_config(path)?;
        return Ok(cfg);
    }
    VlaConfig::preset(spec)
        .with_context(|| format!("--config {spec}: neither a config.json file nor a preset ({})", VlaConfig::PRESETS.join(", ")))
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

/// Every 50th update's mean target per dimension and greedy-outside-support share, for train.json.
fn diagnostics_series(history: &[StepStats], names: &[String]) -> serde_json::Value {
    let every: Vec<&StepStats> = history.iter().filter(|s| s.step % 50 == 0 || s.step + 1 == history.len()).collect();
    let per_dim: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(d, name)| (name.clone(), every.iter().map(|s| s.target_per_dim.get(d).copied().unwrap_or(f32::NAN)).collect()))
        .collect();
    serde_json::json!({
        "step": every.iter().map(|s| s.step).collect::<Vec<_>>(),
        "mean_target_per_dimension": per_dim,
        "greedy_outside_support": every.iter().map(|s| s.greedy_outside).collect::<Vec<_>>(),
    })
}

pub fn train(args: TrainArgs) -> Result<()> {
    let device = Device::Cpu;
    let out = &args.out;
    let tokenizer_path = out.join(TOKENIZER_FILE);
    // A resumed run brings its architecture and options; a fresh one must not overwrite a model.
    let resumed = if args.resume {
        if !Trainer::has_checkpoint(out) {
            bail!("--resume: {} holds no checkpoint", out.display());
        }
        Some(Trainer::resume(out, args.steps, &device)?)
    } else {
        if Trainer::has_checkpoint(out) || out.join(WEIGHTS_FILE).exists() {
            bail!("{} already holds a model or checkpoint: pass --resume to continue it, or choose another --out", out.display());
        }
        None
    };
    let cfg = match &resumed {
        Some(trainer) => trainer.config().clone(),
        None => read_architecture(args.config.as_deref().expect("clap requires --config without --resume"))?,
    };

    // Episodes first: a fresh run's tokenizer is trained on their instructions.
    let space = ActionSpace::new(&cfg.actions)?;
    let cache = args.cache.clone().unwrap_or_else(|| args.data.join(".cache"));
    let loading = bar(0, "{spinner} reading bags [{bar:40}] {pos}/{len} {elapsed}");
    let started = Instant::now();
    let dataset = Dataset::load(&args.data, &cache, cfg.image_size, &space, &Topics::default(), |done, total| {
        loading.set_length(total as u64);
        loading.set_position(done as u64);
    })?;
    loading.finish_and_clear();
    let load_s = started.elapsed().as_secs_f64();
    for skipped in &dataset.skipped {
        tracing::warn!("skipped {skipped}");
    }

    let (mut trainer, tokenizer) = match resumed {
        Some(trainer) => {
            let text = &trainer.config().text;
            let tokenizer = InstructionTokenizer::from_file(&tokenizer_path, text.max_tokens, text.vocab_size)?;
            (trainer, tokenizer)
        }
        None => {
            let opts = TrainOptions {
                objective: args.objective,
                successes_only: args.successes_only,
                steps: args.steps,
                batch_size: args.batch_size,
                warmup: args.warmup,
                adamw: AdamWConfig { lr: args.lr, weight_decay: args.weight_decay, ..Default::default() },
                gamma: args.gamma,
                tau: args.tau,
                alpha: args.alpha,
                beta: args.beta,
                seed: args.seed,
                n_step: args.n_step,
                freeze_encoders_after: args.freeze_encoders_after.0,
                min_bin_share: args.min_bin_share,
            };
            opts.validate()?;
            let mut cfg = cfg;
            // The bins this run's data supports: targets maximise and the policy chooses over these.
            let used: Vec<Vec<u32>> =
                dataset.step_indices(opts.successes_only).into_iter().map(|i| dataset.bins[i].clone()).collect();
            cfg.actions.supported = Some(supported_ranges(&used, cfg.actions.bins, opts.min_bin_share));
            let words = train_word_level(dataset.episodes.iter().map(|e| e.instruction.as_str()), cfg.text.vocab_size)?;
            cfg.text.vocab_size = words.get_vocab_size(true);
            std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
            words.save(&tokenizer_path, true).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tokenizer_path.display()))?;
            let tokenizer = InstructionTokenizer::new(words, cfg.text.max_tokens, cfg.text.vocab_size);
            (Trainer::new(&cfg, &opts, &device)?, tokenizer)
        }
    };
    let cfg = trainer.config().clone();
    let opts = trainer.options().clone();
    let eligible = dataset.step_indices(opts.successes_only);
    if eligible.is_empty() {
        bail!("no steps to train on (successes only: {})", opts.successes_only);
    }
    let successes = dataset.episodes.iter().filter(|e| e.success).count();
    eprintln!(
        "data: {} episodes ({} successful), {} steps, {} used; read in {load_s:.1} s",
        dataset.episodes.len(),
        successes,
        dataset.steps(),
        eligible.len()
    );
    for (family, (n, ok)) in data::summary(&dataset) {
        eprintln!("  {family:<12} {n:>5} episodes, {:>5.1} % successful", 100.0 * ok as f64 / n.max(1) as f64);
    }

    let supported: Vec<usize> =
        ActionSpace::new(&cfg.actions)?.valid_masks().iter().map(|m| m.iter().filter(|&&v| v).count()).collect();
    eprintln!("supported bins per dimension: {supported:?}");
    let mut batcher = Batcher::new(&dataset, &tokenizer, cfg.history, cfg.preprocess.clone(), &device);
    let progress = bar(opts.steps as u64, "{spinner} training [{bar:30}] {pos}/{len} {per_sec} {elapsed} (eta {eta}) {msg}");
    progress.set_position(trainer.step as u64);
    let first_step = trainer.step;
    let started = Instant::now();
    let mut recent: Vec<StepStats> = Vec::new();
    let deadline = args.max_minutes.map(|m| started + std::time::Duration::from_secs_f64(m.max(0.0) * 60.0));
    while trainer.step < opts.steps {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::warn!("stopping at update {} of {}: --max-minutes reached", trainer.step, opts.steps);
            trainer.save_checkpoint(out)?;
            break;
        }
        let freezing = (trainer.encoders_frozen() && !batcher.is_encoded()).then(|| {
            (bar(0, "{spinner} encoders frozen: caching their output [{bar:30}] {pos}/{len} episodes {elapsed}"), Instant::now())
        });
        let batch = trainer.next_batch(&mut batcher, &eligible, |done, total| {
            if let Some((encoding, _)) = &freezing {
                encoding.set_length(total as u64);
                encoding.set_position(done as u64);
            }
        })?;
        if let Some((encoding, started)) = freezing {
            encoding.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!("encoders frozen at update {}: cached {} steps in {seconds:.1} s", trainer.step, dataset.steps());
        }
        let stats = trainer.update(&batch)?;
        recent.push(stats.clone());
        if recent.len() > 50 {
            recent.remove(0);
        }
        let mean = |f: fn(&StepStats) -> f32| recent.iter().map(f).sum::<f32>() / recent.len() as f32;
        let message = match opts.objective {
            Objective::Q => format!(
                "loss {:.4} td {:.4} cql {:.4} Q {:.3} target {:.3}",
                mean(|s| s.loss),
                mean(|s| s.main),
                mean(|s| s.conservative),
                mean(|s| s.q_data),
                mean(|s| s.q_target)
            ),
            Objective::Bc => {
                format!("loss {:.4} ce {:.4} balance {:.3}", mean(|s| s.loss), mean(|s| s.main), mean(|s| s.balance))
            }
        };
        // Without a terminal (CI, nohup) the bar is hidden: a log line now and then instead.
        if progress.is_hidden() && trainer.step % 50 == 0 {
            tracing::info!("update {}/{}: {message}", trainer.step, opts.steps);
        }
        progress.set_message(message);
        progress.inc(1);
        if trainer.step % args.checkpoint_every.max(1) == 0 || trainer.step == opts.steps {
            trainer.save_checkpoint(out)?;
        }
    }
    progress.finish();
    let train_s = started.elapsed().as_secs_f64();
    let updates = trainer.step - first_step;
    let samples_per_s = (updates * opts.batch_size) as f64 / train_s.max(1e-9);

    // The model folder: what the node and eval load.
    let mut model_cfg = cfg.clone();
    model_cfg.trained = true;
    let weights = trainer.weights();
    std::fs::write(out.join(CONFIG_FILE), serde_json::to_string_pretty(&model_cfg)? + "\n")?;
    save_weights(&weights, &out.join(WEIGHTS_FILE))?;
    let title = format!("{} ({:?}{})", out.display(), opts.objective, if opts.successes_only { ", successes only" } else { "" });
    plot::loss_curves(&trainer.history, opts.objective, &title, &out.join("loss.png")).map_err(anyhow::Error::msg)?;
    plot::diagnostics(&trainer.history, &cfg.actions.names, &title, &out.join("diagnostics.png")).map_err(anyhow::Error::msg)?;
    let params = count_params(&model_cfg, weights.iter());
    let last = |f: fn(&StepStats) -> f32| recent.iter().map(f).sum::<f32>() / recent.len().max(1) as f32;
    let report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "options": opts,
        "data": {
            "dir": args.data,
            "episodes": dataset.episodes.len(),
            "successful_episodes": successes,
            "steps": dataset.steps(),
            "steps_used": eligible.len(),
        },
        "params": { "total": params.total, "active_per_token": params.active_per_token },
        "updates_this_run": updates,
        "train_seconds_this_run": train_s,
        "samples_per_second": samples_per_s,
        "threads": rayon::current_num_threads(),
        "final": {
            "loss": last(|s| s.loss),
            "main": last(|s| s.main),
            "q_data": last(|s| s.q_data),
            "q_target": last(|s| s.q_target),
            "greedy_outside_support": last(|s| s.greedy_outside),
        },
        "supported_bins_per_dimension": supported,
        "diagnostics": diagnostics_series(&trainer.history, &cfg.actions.names),
    });
    std::fs::write(out.join("train.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    // Loading the folder back checks that config, weights and tokenizer agree.
    Policy::load(out, &device).context("the written model does not load")?;
    println!(
        "trained {} updates in {train_s:.0} s ({samples_per_s:.1} samples/s); wrote {} ({} parameters)",
        updates,
        out.display(),
        params.total
    );
    Ok(())
}
