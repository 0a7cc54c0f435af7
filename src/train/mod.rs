//! Offline training from recorded episodes: conservative Q-learning (the method, after
//! Q-Transformer and GeRM) or behaviour cloning (the baseline), AdamW with a cosine schedule, an
//! EMA target network, checkpoints that resume bit for bit. A run may train end to end for a while
//! and then freeze the instruction and frame encoders: their output is computed once per step and
//! every later update touches only the decoder, which is what makes proper training affordable on
//! a 2-core CPU.
//!
//! Papers: Q-Transformer (Chebotar et al. 2023, <https://arxiv.org/abs/2309.10150>) for the
//! per-dimension Bellman targets and the conservative term; GeRM (Song et al. 2024,
//! <https://arxiv.org/abs/2403.13358>) and MoRE (Zhao et al. 2025,
//! <https://arxiv.org/abs/2503.08007>) for Q-learning a mixture-of-experts VLA from mixed-quality
//! episodes.

pub mod data;
pub mod objective;
pub mod optim;
pub mod plot;
pub mod recipe;
mod run;
#[cfg(test)]
mod tests;
mod trainer;

use serde::{Deserialize, Serialize};

use crate::action::ActionError;
use crate::model::ModelError;
use crate::policy::{PolicyError, TokenizeError};
use optim::AdamWConfig;

pub use data::{Batcher, Dataset, Observations, Topics};
pub use recipe::{OptionsPatch, Recipe, RecipeRecord};
pub use run::{train_model, DataSummary, TrainProgress, TrainReport, TrainRun};
#[cfg(test)]
use trainer::read_checkpoint_state;
pub use trainer::Trainer;

/// Keeps freed memory in the process for the next update. Every update allocates and frees tensors
/// of up to tens of MB; by default glibc hands those back to the kernel at once (`mmap`/trim) and
/// then page-faults them in again, which cost about a sixth of an end-to-end update here. Call it
/// once, before training starts; it changes nothing but where memory comes from.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        // 32 MiB is the most glibc accepts for the mmap threshold on 64-bit.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// The threads a training run works on: `explicit` (`--threads`), else `RAYON_NUM_THREADS`, else
/// every core.
pub fn training_threads(explicit: Option<usize>) -> usize {
    explicit
        .or_else(|| std::env::var("RAYON_NUM_THREADS").ok().and_then(|t| t.parse().ok()))
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
    #[error("cannot write {path}: {reason}")]
    Write { path: std::path::PathBuf, reason: String },
    #[error("the written model does not load: {0}")]
    WrittenModel(PolicyError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Conservative Q-learning with per-dimension Bellman targets (the method).
    Q,
    /// Behaviour cloning: cross-entropy on the recorded bins (the baseline).
    Bc,
    /// IQL-style (Kostrikov et al. 2022, with AWAC's policy evaluation): Q learns on the data's
    /// bins only, towards an expectile of Q under the policy head instead of a max over bins; the
    /// policy head (the behaviour head) clones the data weighted by exp(advantage), so failures
    /// teach what not to copy. Needs a behaviour filter; decide with `--decision-filter 1` (the
    /// policy's likeliest bin) or lower (the best Q among its likely bins).
    Iql,
}

impl Objective {
    /// Whether the run learns Q values (and keeps a target network).
    pub fn learns_values(self) -> bool {
        matches!(self, Self::Q | Self::Iql)
    }
}

/// What a Bellman target does at the end of an episode that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Timeouts {
    /// As at any other end: nothing follows (the shipped models' recipe).
    Terminal,
    /// The episode was cut short, not ended: bootstrap from its last observation.
    Bootstrap,
}

/// How a batch's steps are drawn from the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Every step alike: long episodes (slow experts) weigh more (the shipped models' recipe).
    Steps,
    /// An episode first, every episode alike, then one of its steps.
    Episodes,
}

/// Everything that decides a run besides the data and the architecture. `Default` is the one
/// home of their defaults (the recipe of `models/default` but for its seed); a recipe
/// (`recipes/*.toml`) and then `moe_vla train`'s flags override them. Recorded in train.json and
/// checkpoints; `recipe::recorded_options` reads older layouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    pub objective: Objective,
    /// Train on successful episodes only (behaviour cloning on demonstrations).
    pub successes_only: bool,
    /// Total gradient updates.
    pub steps: usize,
    pub batch_size: usize,
    pub warmup: usize,
    pub adamw: AdamWConfig,
    /// Discount per control step.
    pub gamma: f64,
    /// EMA rate of the target network.
    pub tau: f64,
    /// Weight of the conservative term (both it and the TD term are per-dimension means; `q` only).
    pub alpha: f64,
    /// `iql`: the expectile of Q under the policy head that a target takes (0.5: the mean, towards
    /// 1: the best bin the policy takes).
    pub expectile: f64,
    /// `iql`: the policy head's weight on a step is exp(inverse_temperature * advantage) (Q is in
    /// 0..1), capped at `MAX_ADVANTAGE_WEIGHT` and normalised over the batch.
    pub inverse_temperature: f64,
    /// Weight of the self-imitation term beside TD (Q-learning): cross-entropy of the data bins under
    /// a softmax of the Q logits, on steps of successful episodes only.
    pub imitation_weight: f64,
    /// Discrete BCQ: the behaviour head learns from the steps of successful episodes only, so a
    /// bin may win an argmax only where successful behaviour takes it (default: from every step,
    /// the data's policy).
    pub behaviour_successes_only: bool,
    /// Weight of the load-balancing loss.
    pub beta: f64,
    pub seed: u64,
    /// The last action dimension bootstraps from the observation n steps later.
    pub n_step: usize,
    /// Targets at the end of a timed-out episode.
    pub timeouts: Timeouts,
    /// How batches draw their steps.
    pub sampling: Sampling,
    /// Train end to end for this many updates, then freeze the frame encoder (and the instruction
    /// path, unless `freeze_instruction_after` froze it earlier) and train the decoder on their
    /// cached output (much faster); `None` (never) trains end to end throughout.
    pub freeze_encoders_after: Option<usize>,
    /// Freeze the instruction path (the instruction encoder or its projections, and the frame
    /// encoder's FiLM layers) after this many updates, while the frame encoder trains on until
    /// `freeze_encoders_after`; `None` (or a number past that) freezes it with the other
    /// encoders. Long end-to-end training fits the training phrasings; this keeps the vision
    /// training without that.
    pub freeze_instruction_after: Option<usize>,
    /// A bin joins a dimension's supported bins (the only ones targets maximise over and the
    /// policy chooses from) when at least this share of the training steps takes it.
    pub min_bin_share: f64,
    /// Each batch is cut into this many shards whose gradients are computed side by side, one per
    /// thread, and summed. It changes the arithmetic slightly (float sums, the balance loss is
    /// per shard), so it belongs to the run: a resumed run keeps it. `moe_vla train` sets it to
    /// `--threads`.
    pub shards: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            objective: Objective::Q,
            successes_only: false,
            steps: 6000,
            batch_size: 64,
            warmup: 100,
            adamw: AdamWConfig::default(),
            gamma: 0.99,
            tau: 0.995,
            alpha: DEFAULT_ALPHA,
            expectile: 0.8,
            inverse_temperature: 10.0,
            imitation_weight: 0.0,
            behaviour_successes_only: false,
            beta: 0.01,
            seed: 0,
            n_step: 4,
            timeouts: Timeouts::Terminal,
            sampling: Sampling::Steps,
            freeze_encoders_after: Some(3000),
            freeze_instruction_after: Some(1600),
            min_bin_share: 0.002,
            shards: 1,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Invalid(m.to_string()));
        if self.steps == 0 || self.batch_size == 0 {
            return bad("steps and batch size must be positive");
        }
        if !(0.0..1.0).contains(&self.tau) || !(0.0..=1.0).contains(&self.gamma) {
            return bad("tau must be in [0, 1) and gamma in [0, 1]");
        }
        if !(self.adamw.lr > 0.0 && self.adamw.lr.is_finite())
            || self.alpha < 0.0
            || self.beta < 0.0
            || !(self.imitation_weight >= 0.0 && self.imitation_weight.is_finite())
        {
            return bad("lr must be positive; alpha, beta and the imitation weight finite and not negative");
        }
        // Written so that NaN fails too.
        let expectile_ok = self.expectile > 0.0 && self.expectile < 1.0;
        if !(expectile_ok && self.inverse_temperature >= 0.0 && self.inverse_temperature.is_finite()) {
            return bad("the expectile must be in (0, 1) and the inverse temperature finite and not negative");
        }
        if self.n_step == 0 {
            return bad("n-step must be at least 1");
        }
        if self.shards == 0 {
            return bad("a batch needs at least 1 shard");
        }
        if !(0.0..1.0).contains(&self.min_bin_share) {
            return bad("the minimum bin share must be in [0, 1)");
        }
        Ok(())
    }
}

/// Weight of the conservative term against the TD term (both per-dimension means).
pub const DEFAULT_ALPHA: f64 = 1.0;

/// What one update measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub step: usize,
    pub lr: f64,
    pub loss: f32,
    /// TD error (Q) or cross-entropy (BC).
    pub main: f32,
    pub conservative: f32,
    /// Self-imitation cross-entropy (Q-learning; computed whatever its weight).
    pub imitation: f32,
    pub balance: f32,
    /// Mean Q of the data actions and mean target (0 for BC).
    pub q_data: f32,
    pub q_target: f32,
    pub grad_norm: f32,
    /// Mean target per action dimension (Q-learning).
    pub target_per_dim: Vec<f32>,
    /// Share of (sample, dimension) pairs whose greedy bin over all valid bins lies outside the
    /// bins the data supports.
    pub greedy_outside: f32,
    /// Cross-entropy of the data bins under the behaviour head, a mean over dimensions (models
    /// with a behaviour filter).
    pub behaviour: f32,
}

impl StepStats {
    /// Adds `w` times a shard's measurements (step, lr and grad norm are the update's, not a
    /// shard's).
    fn add_scaled(&mut self, shard: &Self, w: f32) {
        let Self {
            step: _,
            lr: _,
            grad_norm: _,
            loss,
            main,
            conservative,
            imitation,
            balance,
            q_data,
            q_target,
            target_per_dim,
            greedy_outside,
            behaviour,
        } = shard;
        self.loss += w * loss;
        self.main += w * main;
        self.conservative += w * conservative;
        self.imitation += w * imitation;
        self.balance += w * balance;
        self.q_data += w * q_data;
        self.q_target += w * q_target;
        self.greedy_outside += w * greedy_outside;
        self.behaviour += w * behaviour;
        self.target_per_dim.resize(target_per_dim.len(), 0.0);
        self.target_per_dim.iter_mut().zip(target_per_dim).for_each(|(sum, t)| *sum += w * t);
    }
}
