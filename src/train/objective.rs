//! The training objectives (DESIGN.md, "Training objective"): per-dimension Bellman targets with
//! a Monte-Carlo lower bound and a conservative term (Q-Transformer, GeRM, MoRE), and behaviour
//! cloning as the baseline.

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

/// Bellman targets [B, dims] for the data actions.
///
/// - `q_target`: [B, dims, bins], the target network's Q at (s_t, data bins of earlier dims);
/// - `q_next`: [B, bins], the target network's Q of dimension 0 at s_{t+1};
/// - dimension i < last: `max_b q_target[i + 1]` (no discount inside a time step);
/// - last dimension: `reward + gamma * not_done * max_b q_next` (bootstrap from t + 1);
/// - every target is raised to at least the Monte-Carlo return `mc_return`.
pub fn q_targets(
    q_target: &Tensor,
    q_next: &Tensor,
    mask: &Tensor,
    reward: &Tensor,
    not_done: &Tensor,
    mc_return: &Tensor,
    gamma: f64,
) -> Result<Tensor> {
    let (_, dims, _) = q_target.dims3()?;
    let best = masked_max(q_target, mask)?; // [B, dims]
    let best_next = masked_max(&q_next.unsqueeze(1)?, &mask.narrow(0, 0, 1)?)?.squeeze(1)?; // [B]
    let last = (reward + (not_done * best_next)?.affine(gamma, 0.0)?)?.unsqueeze(1)?; // [B, 1]
    let targets = if dims > 1 { Tensor::cat(&[best.narrow(1, 1, dims - 1)?, last], 1)? } else { last };
    targets.broadcast_maximum(&mc_return.unsqueeze(1)?)?.detach().to_dtype(DType::F32)
}

/// The parts of the Q-learning loss.
pub struct QLoss {
    /// Sum over dimensions of the MSE between Q(a_data) and its target.
    pub td: Tensor,
    /// Sum over dimensions of the mean Q^2 over the valid bins the data did not take.
    pub conservative: Tensor,
    /// Mean Q of the data actions (for the progress display).
    pub q_data: Tensor,
}

/// One-hot [B, dims, bins] of the data bins.
fn one_hot(bins: &Tensor, n: usize) -> Result<Tensor> {
    let (b, dims) = bins.dims2()?;
    let flat = bins.flatten_all()?.to_vec1::<u32>()?;
    let mut hot = vec![0f32; b * dims * n];
    for (i, &bin) in flat.iter().enumerate() {
        hot[i * n + bin as usize] = 1.0;
    }
    Tensor::from_vec(hot, (b, dims, n), bins.device())
}

/// `logits`: [B, dims, bins] from the online network; `bins`: [B, dims] u32 data actions;
/// `targets`: [B, dims].
pub fn q_loss(logits: &Tensor, bins: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<QLoss> {
    let q = candle_nn::ops::sigmoid(logits)?;
    let hot = one_hot(bins, q.dim(2)?)?;
    let q_data = (&q * &hot)?.sum(D::Minus1)?; // [B, dims]
    let td = (q_data.clone() - targets)?.sqr()?.mean(0)?.sum_all()?;
    let other = hot.affine(-1.0, 1.0)?.broadcast_mul(mask)?; // valid bins not taken
    let count = other.sum(D::Minus1)?.clamp(1.0, f64::INFINITY)?;
    let conservative = ((q.sqr()? * &other)?.sum(D::Minus1)? / count)?.mean(0)?.sum_all()?;
    Ok(QLoss { td, conservative, q_data: q_data.mean_all()? })
}

/// Behaviour cloning: cross-entropy of the data bins under a softmax over each dimension's valid
/// bins, summed over dimensions, averaged over the batch.
pub fn bc_loss(logits: &Tensor, bins: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let masked = logits.broadcast_add(&((mask - 1.0)? * 1e4)?)?;
    let log_probs = candle_nn::ops::log_softmax(&masked, D::Minus1)?;
    let hot = one_hot(bins, logits.dim(2)?)?;
    (log_probs * hot)?.sum(D::Minus1)?.mean(0)?.sum_all()? * -1.0
}
