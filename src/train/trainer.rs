//! The trainer: the online network, its EMA target and the optimizer; one update per batch
//! (sharded over the cores), checkpoints that resume bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data::{Batch, Batcher, Dataset};
use super::objective::{
    advantage_weighted_ce, bc_loss, expectile_targets, greedy_outside_support, mask_tensor, one_hot, policy_probs, q_loss,
    q_targets, successes, successes_cross_entropy, Bootstrap,
};
use super::optim::{cosine_lr, AdamW};
use super::{recipe, Objective, Sampling, StepStats, Timeouts, TrainError, TrainOptions};
use crate::action::ActionSpace;
use crate::model::{init_model, is_instruction_weight, read_weights, save_weights, VlaConfig, VlaModel};

const CHECKPOINT: &str = "checkpoint";
/// Written last into a checkpoint folder: a folder that has it is complete.
const STATE_FILE: &str = "state.json";

/// A checkpoint's state.json (`recipe::RECORD_FORMAT`; see `Trainer::resume` for older ones).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointState {
    pub(super) format: u32,
    pub(super) step: usize,
    pub(super) config: VlaConfig,
    pub(super) options: TrainOptions,
    pub(super) history: Vec<StepStats>,
}

/// A checkpoint's state.json in any format. Format 0 (no `format`) lacks the options and step
/// statistics added after its run: the options read as `recipe::recorded_options` says, the
/// missing statistics as 0 (they were not measured).
pub(super) fn read_checkpoint_state(text: &[u8]) -> Result<CheckpointState, String> {
    let mut value: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let format = recipe::record_format(&value)?;
    let fields = value.as_object_mut().ok_or("state.json is not an object")?;
    let options = recipe::recorded_options(fields.get("options").ok_or("no options")?, format)?;
    fields.insert("options".into(), serde_json::to_value(options).expect("plain data"));
    if format == 0 {
        fields.insert("format".into(), serde_json::json!(recipe::RECORD_FORMAT));
        for stats in fields.get_mut("history").and_then(|h| h.as_array_mut()).into_iter().flatten() {
            if let Some(stats) = stats.as_object_mut() {
                for (key, unmeasured) in [
                    ("imitation", serde_json::json!(0.0)),
                    ("target_per_dim", serde_json::json!([])),
                    ("greedy_outside", serde_json::json!(0.0)),
                    ("behaviour", serde_json::json!(0.0)),
                ] {
                    stats.entry(key).or_insert(unmeasured);
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The online network, its EMA target and the optimizer.
pub struct Trainer {
    pub(super) cfg: VlaConfig,
    pub(super) opts: TrainOptions,
    pub(super) device: Device,
    pub(super) vars: Vec<(String, Var)>,
    pub(super) online: VlaModel,
    pub(super) target: BTreeMap<String, Tensor>,
    pub(super) optimizer: AdamW,
    /// [dims, bins]: the bins a target maximises over (valid and supported).
    pub(super) supported_mask: Tensor,
    /// [dims, bins]: every structurally valid bin (behaviour cloning, the conservative term).
    pub(super) valid_mask: Tensor,
    pub(super) valid: Vec<Vec<bool>>,
    pub(super) supported: Vec<Vec<bool>>,
    /// Updates done.
    pub step: usize,
    pub history: Vec<StepStats>,
}

fn model_from(cfg: &VlaConfig, tensors: HashMap<String, Tensor>, device: &Device) -> candle_core::Result<VlaModel> {
    VlaModel::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device))
}

impl Trainer {
    /// A fresh run: weights initialised from the options' seed.
    pub fn new(cfg: &VlaConfig, opts: &TrainOptions, device: &Device) -> Result<Self, TrainError> {
        opts.validate()?;
        let (_, tensors) = init_model(cfg, opts.seed, device)?;
        Self::from_tensors(cfg, opts, tensors, None, device)
    }

    /// Weights of the frame encoder (with its FiLM layers) and of the instruction encoder.
    pub const ENCODER_PREFIXES: [&'static str; 2] = ["vision.", "text."];

    /// A fresh run whose encoders' weights (`ENCODER_PREFIXES`) are `weights`' (a trained model's,
    /// of the same architecture there); the rest is initialised from the options' seed.
    pub fn with_encoders_from(
        cfg: &VlaConfig,
        opts: &TrainOptions,
        weights: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        opts.validate()?;
        let (_, mut tensors) = init_model(cfg, opts.seed, device)?;
        let mut copied = 0;
        for (name, fresh) in tensors.iter_mut().filter(|(n, _)| Self::ENCODER_PREFIXES.iter().any(|p| n.starts_with(p))) {
            let trained = weights.get(name).ok_or_else(|| TrainError::Invalid(format!("the encoders' model has no {name}")))?;
            if trained.dims() != fresh.dims() {
                return Err(TrainError::Invalid(format!(
                    "{name} is {:?} in the encoders' model but {:?} in this architecture",
                    trained.dims(),
                    fresh.dims()
                )));
            }
            *fresh = trained.to_device(device)?.to_dtype(DType::F32)?;
            copied += 1;
        }
        tracing::info!("encoders: {copied} weights from a trained model");
        Self::from_tensors(cfg, opts, tensors, None, device)
    }

    fn from_tensors(
        cfg: &VlaConfig,
        opts: &TrainOptions,
        online: BTreeMap<String, Tensor>,
        target: Option<BTreeMap<String, Tensor>>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        if opts.behaviour_successes_only && cfg.behaviour_filter.is_none() {
            return Err(TrainError::Invalid(
                "--behaviour-successes-only trains the behaviour head: it needs --behaviour-filter".to_string(),
            ));
        }
        if opts.objective == Objective::Iql && (cfg.behaviour_filter.is_none() || opts.behaviour_successes_only) {
            return Err(TrainError::Invalid(
                "--objective iql trains the behaviour head as its policy: it needs --behaviour-filter, and the policy \
                 learns from every step (no --behaviour-successes-only)"
                    .to_string(),
            ));
        }
        let vars: Vec<(String, Var)> =
            online.iter().map(|(n, t)| Ok((n.clone(), Var::from_tensor(t)?))).collect::<candle_core::Result<_>>()?;
        let model = model_from(cfg, vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect(), device)?;
        let target = match target {
            Some(t) => t,
            None => online.iter().map(|(n, t)| Ok((n.clone(), t.copy()?))).collect::<candle_core::Result<_>>()?,
        };
        let space = ActionSpace::new(&cfg.actions).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let valid: Vec<Vec<bool>> = (0..space.dims()).map(|d| space.structurally_valid(d)).collect();
        let supported = space.valid_masks();
        Ok(Self {
            cfg: cfg.clone(),
            opts: opts.clone(),
            device: device.clone(),
            optimizer: AdamW::new(vars.clone(), opts.adamw)?,
            vars,
            online: model,
            target,
            supported_mask: mask_tensor(&supported, device)?,
            valid_mask: mask_tensor(&valid, device)?,
            valid,
            supported,
            step: 0,
            history: Vec::new(),
        })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.cfg
    }

    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    /// The random generator of update `step`: a resumed run draws the same batches.
    pub fn batch_rng(&self, step: usize) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(self.opts.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Whether the encoders are frozen: updates then take batches of their cached output.
    pub fn encoders_frozen(&self) -> bool {
        self.opts.freeze_encoders_after.is_some_and(|n| self.step >= n)
    }

    /// Whether the instruction path is frozen while the frame encoder may still train: updates
    /// then leave its weights (and their optimizer moments) as they are.
    pub fn instruction_frozen(&self) -> bool {
        self.opts.freeze_instruction_after.is_some_and(|n| self.step >= n)
    }

    /// The online network.
    pub fn model(&self) -> &VlaModel {
        &self.online
    }

    /// The batch of update `self.step`: steps drawn from `eligible` with that update's generator
    /// (so a resumed run draws the same ones), served from the encoders' cached output once they
    /// are frozen. The first batch after freezing encodes every step first; `progress(done,
    /// total)` sees that.
    pub fn next_batch(
        &self,
        batcher: &mut Batcher,
        eligible: &[usize],
        progress: impl FnMut(usize, usize),
    ) -> Result<Batch, TrainError> {
        if self.encoders_frozen() && !batcher.is_encoded() {
            batcher.encode_all(&self.online, progress)?;
        }
        let rng = &mut self.batch_rng(self.step);
        let steps = match self.opts.sampling {
            Sampling::Steps => Dataset::sample_steps(eligible, self.opts.batch_size, rng),
            Sampling::Episodes => batcher.data.sample_by_episode(eligible, self.opts.batch_size, rng),
        };
        Ok(batcher.batch(&steps, self.opts.gamma, self.opts.n_step, self.opts.timeouts == Timeouts::Bootstrap)?)
    }

    /// One gradient update on `batch`. With several shards each computes the gradient of its
    /// rows on its own thread, and the gradients are summed in shard order, so the result does not
    /// depend on how many threads there are.
    pub fn update(&mut self, batch: &Batch) -> Result<StepStats, TrainError> {
        let rows = batch.batch_size()?;
        if rows == 0 {
            return Err(TrainError::Invalid("an empty batch".to_string()));
        }
        let target_model = self
            .opts
            .objective
            .learns_values()
            .then(|| model_from(&self.cfg, self.target.clone().into_iter().collect(), &self.device))
            .transpose()?;
        let successes = successes(&batch.mc_return)?;
        let shards = batch.shards(self.opts.shards)?;
        let results = shards
            .par_iter()
            .map(|shard| {
                // Every term but self-imitation is a mean over rows: weighting each shard by its
                // share of the batch makes the summed gradient the whole batch's. Self-imitation
                // is a mean over the batch's successful rows, wherever they fall.
                let share = shard.batch_size()? as f64 / rows as f64;
                let (loss, stats) = self.shard_loss(shard, target_model.as_ref(), successes * share)?;
                Ok(((loss * share)?.backward()?, stats, share as f32))
            })
            .collect::<Result<Vec<(GradStore, StepStats, f32)>, TrainError>>()?;
        let mut stats = StepStats {
            step: self.step,
            lr: cosine_lr(self.opts.adamw.lr, self.step, self.opts.warmup, self.opts.steps),
            ..Default::default()
        };
        let mut results = results.into_iter();
        let (mut grads, first, share) = results.next().expect("a batch with rows has a shard");
        stats.add_scaled(&first, share);
        for (shard_grads, shard_stats, share) in results {
            stats.add_scaled(&shard_stats, share);
            for (_, var) in &self.vars {
                if let Some(g) = shard_grads.get(var) {
                    let total = match grads.get(var) {
                        Some(sum) => (sum + g)?,
                        None => g.clone(),
                    };
                    grads.insert(var, total);
                }
            }
        }
        if !stats.loss.is_finite() {
            return Err(TrainError::Invalid(format!("the loss became {} at step {}", stats.loss, self.step)));
        }
        if self.instruction_frozen() {
            for (_, var) in self.vars.iter().filter(|(name, _)| is_instruction_weight(name)) {
                grads.remove(var);
            }
        }
        stats.grad_norm = self.optimizer.step(&grads, stats.lr)?;
        if self.opts.objective.learns_values() {
            self.update_target()?;
        }
        self.step += 1;
        self.history.push(stats.clone());
        Ok(stats)
    }

    /// The loss of one shard of a batch and what it measured (its means over the shard's rows).
    /// `successes_divisor` is what the shard's sums over successful rows are divided by (see
    /// `update`).
    fn shard_loss(
        &self,
        batch: &Batch,
        target_model: Option<&VlaModel>,
        successes_divisor: f64,
    ) -> Result<(Tensor, StepStats), TrainError> {
        let dims = self.cfg.action_dims();
        let prefix_bins = batch.bins.narrow(1, 0, dims - 1)?;
        let obs = batch.obs.encode(&self.online)?;
        let out = self.online.forward_train(&obs, &prefix_bins)?;
        let (logits, balance) = (&out.q, out.balance);
        let mut stats = StepStats::default();
        let boot = Bootstrap { return_n: &batch.return_n, discount: &batch.discount, mc_return: &batch.mc_return };
        // iql: the advantage of each data bin, which weights the policy head's loss.
        let mut advantage = None;
        let main_loss = match (self.opts.objective, target_model) {
            (Objective::Q, Some(target_model)) => {
                let q_target =
                    candle_nn::ops::sigmoid(&target_model.forward_encoded(&batch.obs.encode(target_model)?, &prefix_bins)?)?;
                let empty = Tensor::zeros((batch.bins.dim(0)?, 0), DType::U32, &self.device)?;
                let q_next = candle_nn::ops::sigmoid(&target_model.forward_encoded(&batch.next.encode(target_model)?, &empty)?)?
                    .squeeze(1)?;
                let targets = q_targets(&q_target, &q_next, &self.supported_mask, &boot)?;
                let parts = q_loss(logits, &batch.bins, &targets, &self.valid_mask)?;
                stats.main = parts.td.to_scalar()?;
                stats.conservative = parts.conservative.to_scalar()?;
                stats.q_data = parts.q_data.to_scalar()?;
                stats.q_target = targets.mean_all()?.to_scalar()?;
                stats.target_per_dim = targets.mean(0)?.to_vec1()?;
                let imitation =
                    successes_cross_entropy(logits, &batch.bins, &self.valid_mask, &batch.mc_return, successes_divisor)?;
                stats.imitation = imitation.to_scalar()?;
                let q = (parts.td + (parts.conservative * self.opts.alpha)?)?;
                if self.opts.imitation_weight > 0.0 {
                    (q + (imitation * self.opts.imitation_weight)?)?
                } else {
                    q
                }
            }
            (Objective::Iql, Some(target_model)) => {
                let now = self.values_and_policy(target_model, &batch.obs.encode(target_model)?, &prefix_bins)?;
                let empty = Tensor::zeros((batch.bins.dim(0)?, 0), DType::U32, &self.device)?;
                let next = self.values_and_policy(target_model, &batch.next.encode(target_model)?, &empty)?;
                let (targets, values) = expectile_targets((&now.0, &now.1), (&next.0, &next.1), self.opts.expectile, &boot)?;
                let q_taken = (&now.0 * one_hot(&batch.bins, now.0.dim(2)?)?)?.sum(candle_core::D::Minus1)?; // [B, dims]
                advantage = Some((q_taken - values)?);
                // Only the data's bins learn: no conservative term, as no target looks past the
                // policy's bins.
                let parts = q_loss(logits, &batch.bins, &targets, &self.valid_mask)?;
                stats.main = parts.td.to_scalar()?;
                stats.q_data = parts.q_data.to_scalar()?;
                stats.q_target = targets.mean_all()?.to_scalar()?;
                stats.target_per_dim = targets.mean(0)?.to_vec1()?;
                parts.td
            }
            (Objective::Q | Objective::Iql, None) => {
                return Err(TrainError::Invalid("learning values needs the target network".to_string()))
            }
            (Objective::Bc, _) => {
                let ce = bc_loss(logits, &batch.bins, &self.valid_mask)?;
                stats.main = ce.to_scalar()?;
                ce
            }
        };
        // The behaviour head learns the data's policy from every step (or the successful
        // episodes' policy from theirs), whatever the objective.
        let main_loss = match &out.behaviour {
            Some(behaviour) => {
                let ce = if let Some(advantage) = &advantage {
                    advantage_weighted_ce(behaviour, &batch.bins, &self.valid_mask, advantage, self.opts.inverse_temperature)?
                } else if self.opts.behaviour_successes_only {
                    successes_cross_entropy(behaviour, &batch.bins, &self.valid_mask, &batch.mc_return, successes_divisor)?
                } else {
                    (bc_loss(behaviour, &batch.bins, &self.valid_mask)? / dims as f64)?
                };
                stats.behaviour = ce.to_scalar()?;
                (main_loss + ce)?
            }
            None => main_loss,
        };
        stats.greedy_outside = greedy_outside_support(&logits.detach(), &self.valid, &self.supported)?;
        stats.balance = balance.to_scalar()?;
        let loss = (main_loss + (balance * self.opts.beta)?)?;
        stats.loss = loss.to_scalar()?;
        Ok((loss, stats))
    }

    /// `model`'s Q values and policy (behaviour head) probabilities over the supported bins, each
    /// [B, m + 1, bins] for the data bins `bins` [B, m] of the first dimensions.
    fn values_and_policy(
        &self,
        model: &VlaModel,
        obs: &crate::model::EncodedObservation,
        bins: &Tensor,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let out = model.forward_train(obs, bins)?;
        let behaviour = out.behaviour.ok_or_else(|| TrainError::Invalid("iql needs a behaviour head".to_string()))?;
        let mask = self.supported_mask.narrow(0, 0, out.q.dim(1)?)?;
        Ok((candle_nn::ops::sigmoid(&out.q)?, policy_probs(&behaviour, &mask)?))
    }

    /// target <- tau * target + (1 - tau) * online.
    fn update_target(&mut self) -> candle_core::Result<()> {
        let tau = self.opts.tau;
        for (name, var) in &self.vars {
            let t = &self.target[name];
            let blended = ((t * tau)? + (var.as_tensor().detach() * (1.0 - tau))?)?;
            self.target.insert(name.clone(), blended);
        }
        Ok(())
    }

    /// The online weights as plain named tensors.
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        self.vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect()
    }

    /// Writes `<dir>/checkpoint/`: online and target weights, optimizer moments, step, history,
    /// and the caller's `extra` files (name, bytes). The new checkpoint is complete before the old
    /// one is set aside, and the old one goes only after the new one is in place, so a kill at
    /// any moment leaves a checkpoint that [`Self::resume`] finds.
    pub fn save_checkpoint(&self, dir: &Path, extra: &[(&str, &[u8])]) -> Result<(), TrainError> {
        let ck = Self::checkpoint_dir(dir);
        let fail = |reason: String| TrainError::Checkpoint { path: ck.clone(), reason };
        let tmp = dir.join(format!("{CHECKPOINT}.partial"));
        let old = dir.join(format!("{CHECKPOINT}.old"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| fail(e.to_string()))?;
        save_weights(&self.weights(), &tmp.join("online.safetensors"))?;
        save_weights(&self.target, &tmp.join("target.safetensors"))?;
        save_weights(&self.optimizer.state(), &tmp.join("optimizer.safetensors"))?;
        for (name, bytes) in extra {
            std::fs::write(tmp.join(name), bytes).map_err(|e| fail(e.to_string()))?;
        }
        // state.json last: a folder that has it is complete.
        let state = CheckpointState {
            format: recipe::RECORD_FORMAT,
            step: self.step,
            config: self.cfg.clone(),
            options: self.opts.clone(),
            history: self.history.clone(),
        };
        std::fs::write(tmp.join(STATE_FILE), serde_json::to_vec_pretty(&state).expect("plain data"))
            .map_err(|e| fail(e.to_string()))?;
        if ck.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::rename(&ck, &old).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::rename(&tmp, &ck).map_err(|e| fail(e.to_string()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Continues the run saved in `<dir>/checkpoint/` (or in the previous checkpoint a save
    /// interrupted between its two renames left). `steps` may extend the run; every other option
    /// must match the checkpoint's.
    pub fn resume(dir: &Path, steps: usize, device: &Device) -> Result<Self, TrainError> {
        let ck = Self::saved_checkpoint(dir).unwrap_or_else(|| Self::checkpoint_dir(dir));
        let fail = |reason: String| TrainError::Checkpoint { path: ck.clone(), reason };
        let text = std::fs::read(ck.join(STATE_FILE)).map_err(|e| fail(e.to_string()))?;
        let state = read_checkpoint_state(&text).map_err(fail)?;
        let mut opts = state.options.clone();
        opts.steps = steps.max(state.step);
        let read = |name: &str| -> Result<BTreeMap<String, Tensor>, TrainError> {
            Ok(read_weights(&ck.join(name), device)?.into_iter().collect())
        };
        let mut trainer =
            Self::from_tensors(&state.config, &opts, read("online.safetensors")?, Some(read("target.safetensors")?), device)?;
        let moments = read_weights(&ck.join("optimizer.safetensors"), device)?;
        trainer.optimizer.restore(&moments, state.step).map_err(fail)?;
        trainer.step = state.step;
        trainer.history = state.history;
        Ok(trainer)
    }

    /// `<dir>/checkpoint/`.
    pub fn checkpoint_dir(dir: &Path) -> PathBuf {
        dir.join(CHECKPOINT)
    }

    /// The complete checkpoint in `<dir>`: `checkpoint/`, or `checkpoint.old/` when a save was
    /// killed after setting the old one aside and before putting the new one in place.
    pub fn saved_checkpoint(dir: &Path) -> Option<PathBuf> {
        [Self::checkpoint_dir(dir), dir.join(format!("{CHECKPOINT}.old"))].into_iter().find(|ck| ck.join(STATE_FILE).is_file())
    }

    /// Whether `<dir>` holds a checkpoint to resume.
    pub fn has_checkpoint(dir: &Path) -> bool {
        Self::saved_checkpoint(dir).is_some()
    }
}
