//! The training objectives: per-dimension Bellman targets with n-step returns and a Monte-Carlo
//! lower bound, a conservative term on the bins the data did not take (Q-Transformer,
//! Chebotar et al. 2023; GeRM, Song et al. 2024; MoRE), an optional self-imitation term, and
//! behaviour cloning as the baseline. Losses are taken on logits (binary cross-entropy), which
//! does not saturate where Q = sigmoid(logit) nears 0 or 1.

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
    let (_, dims, _) = q_target.dims3()?;
    let best = masked_max(q_target, mask)?; // [B, dims]
    let best_next = masked_max(&q_next.unsqueeze(1)?, &mask.narrow(0, 0, 1)?)?.squeeze(1)?; // [B]
    let last = (boot.return_n + (boot.discount * best_next)?)?.unsqueeze(1)?; // [B, 1]
    let targets = if dims > 1 { Tensor::cat(&[best.narrow(1, 1, dims - 1)?, last], 1)? } else { last };
    targets.broadcast_maximum(&boot.mc_return.unsqueeze(1)?)?.detach().to_dtype(DType::F32)
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
    let masked = logits.broadcast_add(&((mask - 1.0)? * 1e4)?)?;
    let log_probs = candle_nn::ops::log_softmax(&masked, D::Minus1)?;
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
