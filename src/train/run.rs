//! A whole training run, as `moe_vla train` runs it: episodes from bags, a fresh or resumed
//! trainer, updates with checkpoints until the planned steps or a time limit, then the model
//! folder (config.json, model.safetensors, tokenizer.json) with train.json, loss.png and
//! diagnostics.png.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::recipe::{data_fingerprint, RecipeRecord, RECORD_FORMAT, SOURCE_REVISION};
use super::{data, plot, Batcher, Dataset, Objective, StepStats, Topics, TrainError, TrainOptions, Trainer};
use crate::action::{supported_ranges, ActionSpace};
use crate::model::{count_params, parse_device, save_weights, ParamCount, TextKind, VlaConfig};
use crate::policy::tokenize::train_word_level;
use crate::policy::PolicyError;
use crate::policy::{
    read_config, InstructionText, InstructionTokenizer, Policy, SentenceEncoder, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};

/// Updates whose statistics are averaged for progress and for train.json's final values.
const RECENT_UPDATES: usize = 50;

/// A training run: its data, its model folder, its options and when it stops. `moe_vla train`
/// builds it from a recipe and its flags.
#[derive(Debug, Clone)]
pub struct TrainRun {
    /// Folder of episode bags (rosbag2 directories, .mcap or .db3 files, searched recursively).
    pub data: PathBuf,
    /// Architecture: a preset (tiny, tiny-dense, tiny-streaming, tiny-minilm, germ, germ-full) or a
    /// config.json file. Required for a fresh run.
    pub config: Option<String>,
    /// Instruction encoder, replacing the architecture's: word_level (a tokenizer trained on the
    /// data's instructions) or minilm (the frozen all-MiniLM-L6-v2 that scripts/setup.sh installs).
    pub text: Option<TextKind>,
    /// Discrete BCQ in training: add a behaviour head and let a bin win an argmax only where the
    /// behaviour head finds it at least this share as likely as the likeliest bin (0.3 in Fujimoto
    /// et al.); replaces the architecture's setting.
    pub behaviour_filter: Option<f64>,
    /// The behaviour filter the trained model decides with, written into its config.json in place
    /// of training's. A resumed run without one keeps its checkpoint's, as it keeps its recipe.
    /// The model needs a behaviour head.
    pub decision_filter: Option<f64>,
    /// Seconds between training steps, recorded in the model's config.json as `frame_period_s`
    /// (replacing the architecture's): the node's history keeps one frame per period. Bags whose
    /// camera runs faster are resampled to it by stamp.
    pub frame_period: f64,
    /// Model folder to write (config.json, model.safetensors, tokenizer.json, train.json,
    /// loss.png, checkpoint/).
    pub out: PathBuf,
    pub options: TrainOptions,
    /// The recipe the run came from, recorded in train.json.
    pub recipe: Option<RecipeRecord>,
    /// Save a checkpoint every N updates (and at the end).
    pub checkpoint_every: usize,
    /// Stop after this many minutes of training even if the steps are not reached (the schedule
    /// stays planned for them); the model and a checkpoint are written either way, so a resumed
    /// run can continue later.
    pub max_minutes: Option<f64>,
    /// Continue the run in OUT/checkpoint up to `options.steps`; the other options come from it.
    pub resume: bool,
    /// Frame cache folder (default: DATA/.cache).
    pub cache: Option<PathBuf>,
    /// A fresh run starts its frame and instruction encoders (`Trainer::ENCODER_PREFIXES`) from
    /// this model folder's weights; the decoder and heads start fresh. With
    /// `freeze_encoders_after` 0 the run trains the decoder alone on a trained model's perception.
    pub encoders_from: Option<PathBuf>,
    /// Where the updates run: cpu, or cuda / cuda:N (a build with the cuda feature). A fresh run on
    /// a GPU computes each batch whole, in one shard.
    pub device: String,
}

/// What a run reports as it goes, in this order (Encoding and Encoded among the updates).
#[derive(Debug)]
pub enum TrainProgress<'a> {
    /// `done` of `total` bags read into the frame cache (none when the cache is current).
    Reading { done: usize, total: usize },
    /// The episodes are read.
    Data(&'a DataSummary),
    /// Updates start at `first_step` (after a checkpoint's, when resumed) and go up to `steps`.
    Training { first_step: usize, steps: usize, objective: Objective, supported_bins: &'a [usize] },
    /// The encoders are frozen: their output is cached for `done` of `total` episodes.
    Encoding { done: usize, total: usize },
    /// The encoders' output for all `steps` steps was cached in `seconds`, before update `update`.
    Encoded { update: usize, steps: usize, seconds: f64 },
    /// `updates` updates are done; `recent` holds the statistics of the last of them.
    Update { updates: usize, recent: &'a [StepStats] },
}

/// The episodes a run read.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSummary {
    pub episodes: usize,
    pub successful_episodes: usize,
    pub steps: usize,
    /// Seconds between steps: camera frames closer than that were resampled.
    pub frame_period_s: f64,
    /// Camera frames the steps were resampled from.
    pub frames: usize,
    /// Steps the run trains on (all, or those of successful episodes).
    pub steps_used: usize,
    pub read_seconds: f64,
    /// Episodes and successful episodes per task family.
    pub families: BTreeMap<String, (usize, usize)>,
    /// Bags that yielded no episode, with the reason.
    pub skipped: Vec<String>,
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Updates in this run (a resumed run's start from its checkpoint).
    pub updates: usize,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub params: ParamCount,
}

/// Trains a model as `run` says and writes its folder. A fresh run refuses a folder that holds a
/// model or checkpoint; a resumed one continues its checkpoint bit for bit.
pub fn train_model(run: &TrainRun, progress: &mut dyn FnMut(TrainProgress<'_>)) -> Result<TrainReport, TrainError> {
    let resumed_run;
    let run = if run.resume {
        resumed_run = with_checkpoint_record(run)?;
        &resumed_run
    } else {
        run
    };
    let device = parse_device(&run.device).map_err(|e| TrainError::Invalid(format!("--device {e}")))?;
    let resumed = open_run(run, &device)?;
    let cfg = match &resumed {
        Some(trainer) => trainer.config().clone(),
        None => fresh_architecture(run)?,
    };
    check_decision_filter(run.decision_filter, &cfg)?;
    let successes_only = resumed.as_ref().map_or(run.options.successes_only, |t| t.options().successes_only);
    // Episodes first: a fresh run's tokenizer is trained on their instructions.
    let data = read_data(run, &cfg, successes_only, progress)?;
    let (mut trainer, text) = trainer_and_text(run, resumed, cfg, &data, &device)?;
    let supported: Vec<usize> =
        ActionSpace::new(&trainer.config().actions)?.valid_masks().iter().map(|m| m.iter().filter(|&&v| v).count()).collect();
    let opts = trainer.options().clone();
    let first_step = trainer.step;
    progress(TrainProgress::Training { first_step, steps: opts.steps, objective: opts.objective, supported_bins: &supported });
    log_sharding(opts.shards, &device);

    let started = Instant::now();
    let recent = run_updates(run, &mut trainer, &data, &text, &device, progress)?;
    let done = Done { updates: trainer.step - first_step, seconds: started.elapsed().as_secs_f64(), recent, supported };
    let params = write_model(run, &trainer, &data, &done)?;
    // Loading the folder back checks that config, weights and tokenizer agree.
    Policy::load(&run.out, &device).map_err(TrainError::WrittenModel)?;
    let samples_per_second = (done.updates * opts.batch_size) as f64 / done.seconds.max(1e-9);
    Ok(TrainReport { updates: done.updates, seconds: done.seconds, samples_per_second, params })
}

/// The checkpoint a resumed run continues (None for a fresh run, whose options are checked and
/// whose folder must not hold a model already).
fn open_run(run: &TrainRun, device: &Device) -> Result<Option<Trainer>, TrainError> {
    let out = &run.out;
    if run.resume {
        if !Trainer::has_checkpoint(out) {
            return Err(TrainError::Invalid(format!("--resume: {} holds no checkpoint", out.display())));
        }
        return Ok(Some(Trainer::resume(out, run.options.steps, device)?));
    }
    if Trainer::has_checkpoint(out) || out.join(WEIGHTS_FILE).exists() {
        return Err(TrainError::Invalid(format!(
            "{} already holds a model or checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    run.options.validate()?;
    Ok(None)
}

/// A fresh run's architecture: `--config` with the run's frame period, behaviour filter and
/// instruction encoder.
fn fresh_architecture(run: &TrainRun) -> Result<VlaConfig, TrainError> {
    let spec = run.config.as_deref().ok_or_else(|| TrainError::Invalid("--config is required without --resume".into()))?;
    let mut cfg = read_architecture(spec)?;
    cfg.frame_period_s = run.frame_period;
    if run.behaviour_filter.is_some() {
        cfg.behaviour_filter = run.behaviour_filter;
    }
    cfg.validate().map_err(TrainError::Invalid)?;
    Ok(match run.text {
        Some(kind) => cfg.with_text(kind),
        None => cfg,
    })
}

fn check_decision_filter(filter: Option<f64>, cfg: &VlaConfig) -> Result<(), TrainError> {
    let Some(t) = filter else { return Ok(()) };
    if cfg.behaviour_filter.is_none() {
        return Err(TrainError::Invalid(format!(
            "a decision filter ({t}) needs a behaviour head: train with a behaviour filter"
        )));
    }
    if !(0.0..=1.0).contains(&t) {
        return Err(TrainError::Invalid(format!("the decision filter {t} is not in [0, 1]")));
    }
    Ok(())
}

/// The run's episodes, the steps it trains on and what it reports of them.
struct RunData {
    dataset: Dataset,
    eligible: Vec<usize>,
    summary: DataSummary,
    fingerprint: String,
}

fn read_data(
    run: &TrainRun,
    cfg: &VlaConfig,
    successes_only: bool,
    progress: &mut dyn FnMut(TrainProgress<'_>),
) -> Result<RunData, TrainError> {
    let space = ActionSpace::new(&cfg.actions)?;
    let cache = run.cache.clone().unwrap_or_else(|| run.data.join(".cache"));
    let started = Instant::now();
    let dataset =
        Dataset::load(&run.data, &cache, cfg.image_size, cfg.frame_period_s, &space, &Topics::default(), |done, total| {
            progress(TrainProgress::Reading { done, total })
        })?;
    let fingerprint = data_fingerprint(&run.data)?;
    let eligible = dataset.step_indices(successes_only);
    let summary = DataSummary {
        episodes: dataset.episodes.len(),
        successful_episodes: dataset.episodes.iter().filter(|e| e.success).count(),
        steps: dataset.steps(),
        frame_period_s: dataset.frame_period_s,
        frames: dataset.frames_read,
        steps_used: eligible.len(),
        read_seconds: started.elapsed().as_secs_f64(),
        families: data::summary(&dataset),
        skipped: dataset.skipped.clone(),
    };
    progress(TrainProgress::Data(&summary));
    if eligible.is_empty() {
        return Err(TrainError::Invalid(format!("no steps to train on (successes only: {successes_only})")));
    }
    Ok(RunData { dataset, eligible, summary, fingerprint })
}

/// The trainer (resumed, or fresh with the bins the data supports) and the instruction text
/// encoding: a sentence encoder found and checked before any update, or the word-level tokenizer
/// (a fresh run trains it on the data's instructions).
fn trainer_and_text(
    run: &TrainRun,
    resumed: Option<Trainer>,
    cfg: VlaConfig,
    data: &RunData,
    device: &Device,
) -> Result<(Trainer, InstructionText), TrainError> {
    let tokenizer_path = run.out.join(TOKENIZER_FILE);
    let sentence = match (&cfg.text.kind, &cfg.text.encoder) {
        (TextKind::Minilm, Some(spec)) => Some(Arc::new(SentenceEncoder::locate(spec, device).map_err(PolicyError::from)?)),
        _ => None,
    };
    if let Some(trainer) = resumed {
        let t = &trainer.config().text;
        let text = match sentence {
            Some(encoder) => InstructionText::Sentence { encoder, max_tokens: t.max_tokens },
            None => InstructionTokenizer::from_file(&tokenizer_path, t.max_tokens, t.vocab_size)?.into(),
        };
        return Ok((trainer, text));
    }
    let mut cfg = cfg;
    // The bins this run's data supports: targets maximise and the policy chooses over these.
    let used: Vec<Vec<u32>> = data.eligible.iter().map(|&i| data.dataset.bins[i].clone()).collect();
    cfg.actions.supported = Some(supported_ranges(&used, cfg.actions.bins, run.options.min_bin_share));
    std::fs::create_dir_all(&run.out).map_err(|e| write_error(&run.out, e))?;
    let text = match sentence {
        Some(encoder) => InstructionText::Sentence { encoder, max_tokens: cfg.text.max_tokens },
        None => {
            let words = train_word_level(data.dataset.episodes.iter().map(|e| e.instruction.as_str()), cfg.text.vocab_size)?;
            cfg.text.vocab_size = words.get_vocab_size(true);
            words.save(&tokenizer_path, true).map_err(|e| write_error(&tokenizer_path, e))?;
            InstructionTokenizer::new(words, cfg.text.max_tokens, cfg.text.vocab_size).into()
        }
    };
    // Shards exist to keep CPU threads busy; a GPU takes the batch whole.
    let options = TrainOptions { shards: if device.is_cpu() { run.options.shards } else { 1 }, ..run.options.clone() };
    let trainer = match &run.encoders_from {
        Some(model) => {
            let weights = crate::model::read_weights(&model.join(crate::policy::WEIGHTS_FILE), device)?;
            Trainer::with_encoders_from(&cfg, &options, &weights, device)?
        }
        None => Trainer::new(&cfg, &options, device)?,
    };
    Ok((trainer, text))
}

fn log_sharding(shards: usize, device: &Device) {
    let threads = rayon::current_num_threads();
    if !device.is_cpu() {
        tracing::info!("each batch in {shards} shard(s) on the GPU");
    } else if shards < threads {
        tracing::warn!("this run computes each batch in {shards} shard(s) (its checkpoint's), so only that many of the {threads} threads work");
    } else {
        tracing::info!("each batch in {shards} shards on {threads} threads");
    }
}

/// What a checkpoint keeps of its run besides the trainer's state (`checkpoint/run.json`): the
/// threshold the model decides with and the recipe, which `--resume` does not repeat.
#[derive(Serialize, Deserialize)]
struct RunRecord {
    decision_filter: Option<f64>,
    recipe: Option<RecipeRecord>,
}

const RUN_RECORD: &str = "run.json";

/// The trainer's checkpoint with the run's record inside it, so no checkpoint lacks one.
fn save_checkpoint(run: &TrainRun, trainer: &Trainer) -> Result<(), TrainError> {
    let record = RunRecord { decision_filter: run.decision_filter, recipe: run.recipe.clone() };
    let record = serde_json::to_vec_pretty(&record).expect("plain data");
    trainer.save_checkpoint(&run.out, &[(RUN_RECORD, &record)])
}

/// A resumed run decides with, and records, its first part's threshold and recipe where it
/// names none (checkpoints older than `RUN_RECORD` hold neither).
fn with_checkpoint_record(run: &TrainRun) -> Result<TrainRun, TrainError> {
    let mut run = run.clone();
    let Some(path) = Trainer::saved_checkpoint(&run.out).map(|ck| ck.join(RUN_RECORD)) else {
        return Ok(run);
    };
    if path.is_file() {
        let fail = |reason: String| TrainError::Checkpoint { path: path.clone(), reason };
        let text = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
        let record: RunRecord = serde_json::from_slice(&text).map_err(|e| fail(e.to_string()))?;
        run.decision_filter = run.decision_filter.or(record.decision_filter);
        run.recipe = run.recipe.or(record.recipe);
    }
    Ok(run)
}

/// Updates until the planned steps or `--max-minutes`, with checkpoints; returns the statistics
/// of the last updates.
fn run_updates(
    run: &TrainRun,
    trainer: &mut Trainer,
    data: &RunData,
    text: &InstructionText,
    device: &Device,
    progress: &mut dyn FnMut(TrainProgress<'_>),
) -> Result<Vec<StepStats>, TrainError> {
    let cfg = trainer.config().clone();
    let steps = trainer.options().steps;
    let mut batcher = Batcher::new(&data.dataset, text, cfg.history, cfg.preprocess.clone(), device)?;
    let deadline = run.max_minutes.map(|m| Instant::now() + Duration::from_secs_f64(m.max(0.0) * 60.0));
    let mut recent: Vec<StepStats> = Vec::new();
    while trainer.step < steps {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::warn!("stopping at update {} of {steps}: --max-minutes reached", trainer.step);
            save_checkpoint(run, trainer)?;
            break;
        }
        let encoding = (trainer.encoders_frozen() && !batcher.is_encoded()).then(Instant::now);
        let batch =
            trainer.next_batch(&mut batcher, &data.eligible, |done, total| progress(TrainProgress::Encoding { done, total }))?;
        if let Some(encoding) = encoding {
            let seconds = encoding.elapsed().as_secs_f64();
            progress(TrainProgress::Encoded { update: trainer.step, steps: data.dataset.steps(), seconds });
        }
        recent.push(trainer.update(&batch)?);
        if recent.len() > RECENT_UPDATES {
            recent.remove(0);
        }
        progress(TrainProgress::Update { updates: trainer.step, recent: &recent });
        if trainer.step.is_multiple_of(run.checkpoint_every.max(1)) || trainer.step == steps {
            save_checkpoint(run, trainer)?;
        }
    }
    Ok(recent)
}

/// What this run's updates did, for train.json.
struct Done {
    updates: usize,
    seconds: f64,
    recent: Vec<StepStats>,
    supported: Vec<usize>,
}

/// The model folder, what the node and eval load: config.json, model.safetensors, the plots and
/// train.json (how the model was made).
fn write_model(run: &TrainRun, trainer: &Trainer, data: &RunData, done: &Done) -> Result<ParamCount, TrainError> {
    let (out, cfg, opts) = (&run.out, trainer.config(), trainer.options());
    let mut model_cfg = cfg.clone();
    model_cfg.trained = true;
    if run.decision_filter.is_some() {
        model_cfg.behaviour_filter = run.decision_filter;
    }
    let weights = trainer.weights();
    write_text(&out.join(CONFIG_FILE), &serde_json::to_string_pretty(&model_cfg).expect("plain data serialises"))?;
    save_weights(&weights, &out.join(WEIGHTS_FILE))?;
    let title = format!("{} ({:?}{})", out.display(), opts.objective, if opts.successes_only { ", successes only" } else { "" });
    let loss_png = out.join("loss.png");
    plot::loss_curves(&trainer.history, opts.objective, &title, &loss_png).map_err(|e| write_error(&loss_png, e))?;
    let diagnostics_png = out.join("diagnostics.png");
    plot::diagnostics(&trainer.history, &cfg.actions.names, &title, &diagnostics_png)
        .map_err(|e| write_error(&diagnostics_png, e))?;
    let params = count_params(&model_cfg, weights.iter());
    let recent = &done.recent;
    let last = |f: fn(&StepStats) -> f32| recent.iter().map(f).sum::<f32>() / recent.len().max(1) as f32;
    let summary = &data.summary;
    let report = serde_json::json!({
        "format": RECORD_FORMAT,
        // The command line of the process that trained, to tell how the model was made (the
        // program as `moe_vla`, not the path it ran from).
        "command": command_line(),
        "revision": SOURCE_REVISION,
        "recipe": run.recipe,
        "options": opts,
        // Training's threshold is the architecture's (the checkpoint's config.json);
        // this is the one written into config.json, if the run replaced it.
        "decision_filter": run.decision_filter,
        "data": {
            "dir": run.data,
            "fingerprint": data.fingerprint,
            "episodes": summary.episodes,
            "successful_episodes": summary.successful_episodes,
            "steps": summary.steps,
            "frame_period_s": summary.frame_period_s,
            "frames": summary.frames,
            "steps_used": summary.steps_used,
        },
        "params": { "total": params.total, "active_per_token": params.active_per_token },
        "updates_this_run": done.updates,
        "train_seconds_this_run": done.seconds,
        "samples_per_second": (done.updates * opts.batch_size) as f64 / done.seconds.max(1e-9),
        "threads": rayon::current_num_threads(),
        "final": {
            "loss": last(|s| s.loss),
            "main": last(|s| s.main),
            "imitation": last(|s| s.imitation),
            "q_data": last(|s| s.q_data),
            "q_target": last(|s| s.q_target),
            "greedy_outside_support": last(|s| s.greedy_outside),
            "behaviour": last(|s| s.behaviour),
        },
        "supported_bins_per_dimension": done.supported,
        "diagnostics": diagnostics_series(&trainer.history, &cfg.actions.names),
    });
    write_text(&out.join("train.json"), &serde_json::to_string_pretty(&report).expect("plain data serialises"))?;
    Ok(params)
}

/// This process's arguments after `moe_vla`.
fn command_line() -> String {
    std::iter::once("moe_vla".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
}

/// `--config`: a config.json file, or else a preset's name.
fn read_architecture(spec: &str) -> Result<VlaConfig, TrainError> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(read_config(path)?);
    }
    VlaConfig::preset(spec).ok_or_else(|| {
        TrainError::Invalid(format!(
            "--config {spec}: neither a config.json file nor a preset ({})",
            VlaConfig::PRESETS.join(", ")
        ))
    })
}

fn write_error(path: &Path, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Write { path: path.to_path_buf(), reason: reason.to_string() }
}

/// `text` and a final newline.
fn write_text(path: &Path, text: &str) -> Result<(), TrainError> {
    std::fs::write(path, format!("{text}\n")).map_err(|e| write_error(path, e))
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
