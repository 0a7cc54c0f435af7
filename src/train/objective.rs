//! The training objectives: per-dimension Bellman targets with n-step returns and a Monte-Carlo
//! lower bound, a conservative term on the bins the data did not take (Q-Transformer,
//! Chebotar et al. 2023; GeRM, Song et al. 2024; MoRE), an optional self-imitation term, and
//! behaviour cloning as the baseline; and the IQL-style variant's expectile targets and
//! advantage-weighted policy (Kostrikov et al. 2022, <https://arxiv.org/abs/2110.06169>). Losses
//! are taken on logits (binary cross-entropy), which does not saturate where Q = sigmoid(logit)
//! nears 0 or 1.

use candle_core::{DType, Result, Tensor, D};

/// [dims, bins] f32: 1 where a bin is a valid choice.
pub fn mask_tensor(masks: &[Vec<bool>], device: &candle_core::Device) -> Result<Tensor> {
    let dims = masks.len();
    let bins = masks.first().map_or(0, Vec::len);
    let flat: Vec<f32> = masks.iter().flatten().map(|&v| f32::from(u8::from(v))).collect();
    Tensor::from_vec(flat, (dims, bins), device)
}

/// Largest value over the valid bins: `q` [B, dims, bins] (values in 0..1), `mask` [dims, bins]
/// -> [B, dims].
fn masked_max(q: &Tensor, mask: &Tensor) -> Result<Tensor> {
    // Invalid bins drop by 2, below any Q in [0, 1].
    q.broadcast_add(&((mask - 1.0)? * 2.0)?)?.max(D::Minus1)
}

/// What the last dimension bootstraps from, per sample: `return_n + discount * max_b Q(s_{t+n})[0][b]`.
pub struct Bootstrap<'a> {
    /// [B]: the discounted reward inside the n steps (`gamma^(T - t) * success` when the episode
    /// ends within them, else 0: reward comes only at the end).
    pub return_n: &'a Tensor,
    /// [B]: `gamma^n` when s_{t+n} exists, 0 when the episode ended first.
    pub discount: &'a Tensor,
    /// [B]: the Monte-Carlo return `gamma^(T - t) * success`, a lower bound for every target.
    pub mc_return: &'a Tensor,
}

/// Bellman targets [B, dims] for the data actions.
///
/// - `q_target`: [B, dims, bins], the target network's Q at (s_t, data bins of earlier dims);
/// - `q_next`: [B, bins], the target network's Q of dimension 0 at s_{t+n};
/// - dimension i < last: `max_b q_target[i + 1]` over the supported bins (no discount inside a
///   time step);
/// - last dimension: `return_n + discount * max_b q_next` (n-step bootstrap);
/// - every target is raised to at least the Monte-Carlo return.
pub fn q_targets(q_target: &Tensor, q_next: &Tensor, mask: &Tensor, boot: &Bootstrap) -> Result<Tensor> {
    let best = masked_max(q_target, mask)?; // [B, dims]
    let best_next = masked_max(&q_next.unsqueeze(1)?, &mask.narrow(0, 0, 1)?)?.squeeze(1)?; // [B]
    bellman_targets(&best, &best_next, boot)
}

/// Targets [B, dims] from the value of each dimension's row, `values` [B, dims] (what the
/// target network expects of dimension i's bins), and the value of s_{t+n}, `value_next` [B]:
/// dimension i < last takes `values[i + 1]`, the last `return_n + discount * value_next`, and
/// every target is at least the Monte-Carlo return.
fn bellman_targets(values: &Tensor, value_next: &Tensor, boot: &Bootstrap) -> Result<Tensor> {
    let (_, dims) = values.dims2()?;
    let last = (boot.return_n + (boot.discount * value_next)?)?.unsqueeze(1)?; // [B, 1]
    let targets = if dims > 1 { Tensor::cat(&[values.narrow(1, 1, dims - 1)?, last], 1)? } else { last };
    targets.broadcast_maximum(&boot.mc_return.unsqueeze(1)?)?.detach().to_dtype(DType::F32)
}

/// Fixed-point steps of `expectile`: each settles which bins lie below the expectile; a row of
/// ~100 bins settles in far fewer.
const EXPECTILE_ITERATIONS: usize = 16;

/// The `tau`-expectile of `q` [B, T, bins] under the probabilities `p` [B, T, bins] -> [B, T]:
/// the m with `tau * E_p[(q - m)+] = (1 - tau) * E_p[(m - q)+]`. tau = 0.5 is the mean; as tau
/// nears 1 it nears the largest q the distribution gives weight to. Iterates
/// `m <- sum(w q) / sum(w)` with `w = p * |tau - 1(q < m)|` from the mean (asymmetric least
/// squares), which settles once the set of bins below m stops changing.
pub fn expectile(q: &Tensor, p: &Tensor, tau: f64) -> Result<Tensor> {
    let mut m = (q * p)?.sum(D::Minus1)?;
    for _ in 0..EXPECTILE_ITERATIONS {
        let below = q.broadcast_lt(&m.unsqueeze(D::Minus1)?)?.to_dtype(q.dtype())?;
        // |tau - below| = tau + below * (1 - 2 tau)
        let w = (p * below.affine(1.0 - 2.0 * tau, tau)?)?;
        m = ((&w * q)?.sum(D::Minus1)? / w.sum(D::Minus1)?.clamp(1e-12, f64::INFINITY)?)?;
    }
    Ok(m)
}

/// Logits [B, T, bins] with the bins outside `mask` [T, bins] dropped far below the rest, so a
/// softmax over them gives those bins no weight.
fn masked(logits: &Tensor, mask: &Tensor) -> Result<Tensor> {
    logits.broadcast_add(&((mask - 1.0)? * 1e4)?)
}

/// A policy's probabilities [B, T, bins] from its logits, over the bins of `mask` [T, bins] only.
pub fn policy_probs(logits: &Tensor, mask: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(&masked(logits, mask)?, D::Minus1)
}

/// IQL-style targets [B, dims]: `q_targets` with each max over bins replaced by the
/// `tau`-expectile under the policy. `q_now`, `p_now`: [B, dims, bins], the target network's Q and
/// policy at (s_t, data bins of earlier dims); `q_next`, `p_next`: [B, 1, bins], dimension 0's at
/// s_{t+n}. Also returns the values [B, dims] (the expectiles of each row), the baseline of the
/// advantages.
pub fn expectile_targets(
    (q_now, p_now): (&Tensor, &Tensor),
    (q_next, p_next): (&Tensor, &Tensor),
    tau: f64,
    boot: &Bootstrap,
) -> Result<(Tensor, Tensor)> {
    let values = expectile(q_now, p_now, tau)?; // [B, dims]
    let value_next = expectile(q_next, p_next, tau)?.squeeze(1)?; // [B]
    Ok((bellman_targets(&values, &value_next, boot)?, values))
}

/// Most weight one (step, dimension) can take in the advantage-weighted policy loss (IQL's cap).
pub const MAX_ADVANTAGE_WEIGHT: f64 = 100.0;

/// Advantage-weighted regression of the policy: the cross-entropy of each data bin under a
/// softmax of `logits` [B, dims, bins] over `mask`'s bins, weighted by
/// `min(exp(inverse_temperature * advantage), MAX_ADVANTAGE_WEIGHT)` (`advantage` [B, dims], no
/// gradient), a mean over samples and dimensions. Steps that did better than the policy's
/// expectation weigh more, failures' steps far less: the policy copies the better part of the data.
pub fn advantage_weighted_ce(
    logits: &Tensor,
    bins: &Tensor,
    mask: &Tensor,
    advantage: &Tensor,
    inverse_temperature: f64,
) -> Result<Tensor> {
    let weights = (advantage.detach() * inverse_temperature)?.exp()?.clamp(0.0, MAX_ADVANTAGE_WEIGHT)?;
    (data_log_probs(logits, bins, mask)? * weights)?.mean_all()? * -1.0
}

/// The parts of the Q-learning loss.
pub struct QLoss {
    /// Mean over samples and dimensions of the binary cross-entropy between Q(a_data) and its
    /// target.
    pub td: Tensor,
    /// Mean over samples and dimensions of `-log(1 - Q)` averaged over the valid bins the data did
    /// not take: pulls them towards the minimum return, 0.
    pub conservative: Tensor,
    /// Mean Q of the data actions (for the progress display).
    pub q_data: Tensor,
}

/// One-hot [B, dims, bins] of the data bins.
pub fn one_hot(bins: &Tensor, n: usize) -> Result<Tensor> {
    let (b, dims) = bins.dims2()?;
    let flat = bins.flatten_all()?.to_vec1::<u32>()?;
    let mut hot = vec![0f32; b * dims * n];
    for (i, &bin) in flat.iter().enumerate() {
        hot[i * n + bin as usize] = 1.0;
    }
    Tensor::from_vec(hot, (b, dims, n), bins.device())
}

/// `softplus(x) = log(1 + e^x)`, stable for large |x|: `max(x, 0) + log(1 + e^-|x|)`.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}

/// `logits`: [B, dims, bins] from the online network; `bins`: [B, dims] u32 data actions;
/// `targets`: [B, dims] in [0, 1]; `mask`: [dims, bins], the bins the conservative term covers.
pub fn q_loss(logits: &Tensor, bins: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<QLoss> {
    let hot = one_hot(bins, logits.dim(2)?)?;
    let x_data = (logits * &hot)?.sum(D::Minus1)?; // [B, dims]
                                                   // BCE(x, y) = softplus(x) - x y.
    let td = (softplus(&x_data)? - (&x_data * targets)?)?.mean_all()?;
    let other = hot.affine(-1.0, 1.0)?.broadcast_mul(mask)?; // valid bins not taken
    let count = other.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?;
    let conservative = ((softplus(logits)? * &other)?.sum(D::Minus1)? / count)?.mean_all()?;
    let q_data = candle_nn::ops::sigmoid(&x_data)?.mean_all()?;
    Ok(QLoss { td, conservative, q_data })
}

/// Log-probability [B, dims] of each data bin under a softmax of the logits over its dimension's
/// valid bins.
fn data_log_probs(logits: &Tensor, bins: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(&masked(logits, mask)?, D::Minus1)?;
    (log_probs * one_hot(bins, logits.dim(2)?)?)?.sum(D::Minus1)
}

/// Behaviour cloning: cross-entropy of the data bins under a softmax over each dimension's valid
/// bins, summed over dimensions, averaged over the batch.
pub fn bc_loss(logits: &Tensor, bins: &Tensor, mask: &Tensor) -> Result<Tensor> {
    data_log_probs(logits, bins, mask)?.mean(0)?.sum_all()? * -1.0
}

/// The cross-entropy of the data bins under a softmax of `logits`, a mean over dimensions like the
/// TD term, summed over the samples of successful episodes (`mc_return` [B] > 0) only and divided
/// by `divisor` (for a whole batch, `successes(mc_return)`: a mean over its successful samples); 0
/// for a batch without any. On the Q logits it is self-imitation (Oh et al. 2018, with the sign of
/// the return as the weight), which ranks the bins that led to success above their neighbours
/// before the TD term has learned why; on the behaviour head's, the successful episodes' policy.
pub fn successes_cross_entropy(
    logits: &Tensor,
    bins: &Tensor,
    mask: &Tensor,
    mc_return: &Tensor,
    divisor: f64,
) -> Result<Tensor> {
    let succeeded = mc_return.gt(0.0)?.to_dtype(DType::F32)?; // [B]
    let per_sample = data_log_probs(logits, bins, mask)?.mean(D::Minus1)?; // [B]
    ((per_sample * succeeded)?.sum_all()? / divisor)? * -1.0
}

/// The number of samples of successful episodes (`mc_return` [B] > 0), at least 1.
pub fn successes(mc_return: &Tensor) -> Result<f64> {
    Ok(f64::from(mc_return.gt(0.0)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?).max(1.0))
}

/// Per dimension, the share of samples whose greedy bin (argmax of `logits` [B, dims, bins] over
/// the structurally valid bins) lies outside the bins the data supports. A high share means the
/// network is optimistic about actions it has never seen taken.
pub fn greedy_outside_support(logits: &Tensor, valid: &[Vec<bool>], supported: &[Vec<bool>]) -> Result<f32> {
    let rows = logits.to_vec3::<f32>()?;
    let (mut outside, mut total) = (0usize, 0usize);
    for sample in &rows {
        for (dim, row) in sample.iter().enumerate() {
            let (best, _) = crate::model::masked_argmax(row, &valid[dim]);
            outside += usize::from(!supported[dim][best as usize]);
            total += 1;
        }
    }
    Ok(outside as f32 / total.max(1) as f32)
}
