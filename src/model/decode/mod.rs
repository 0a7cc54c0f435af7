//! Argmax decoding over action dimensions: each decoder's cached procedure with the state it keeps
//! between control steps (`full.rs`, `streaming.rs`), and the uncached reference procedure (a full
//! forward pass per dimension, as GeRM's released code does).

mod full;
mod streaming;

use candle_core::{Result, Tensor};

pub use full::FrameTokenCache;
pub use streaming::StreamingCache;

use super::decoder::Decoder;
use super::history::FrameRetention;
use super::moe::{DecoderRouting, ExpertLoad};
use super::text::TextInput;
use super::vla::{ObservationBatch, VlaModel};

/// The greedy action of one control step: the argmax bin of each dimension, its Q and the experts' load.
#[derive(Debug, Clone)]
pub struct GreedyAction {
    /// Chosen bin per dimension.
    pub bins: Vec<u32>,
    /// Q value of the chosen bin per dimension, in [0, 1].
    pub q: Vec<f32>,
    pub load: ExpertLoad,
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The best valid bin and its logit. NaN logits never win; if every valid logit is NaN the first
/// valid bin is returned with its NaN, for the caller to reject.
pub fn masked_argmax(logits: &[f32], valid: &[bool]) -> (u32, f32) {
    let mut best: Option<(usize, f32)> = None;
    for (i, (&x, &ok)) in logits.iter().zip(valid).enumerate() {
        if !ok {
            continue;
        }
        match best {
            None => best = Some((i, x)),
            Some((_, b)) if b.is_nan() || x > b => best = Some((i, x)),
            _ => {}
        }
    }
    let (i, x) = best.unwrap_or((0, f32::NAN));
    (i as u32, x)
}

/// What a policy keeps between control steps for cached decoding: its decoder's own state.
#[derive(Debug, Clone)]
pub enum DecoderState {
    Full(FrameTokenCache),
    Streaming(StreamingCache),
}

impl DecoderState {
    pub fn new(model: &VlaModel) -> Self {
        let history = model.config().history;
        match model.decoder() {
            Decoder::Full(_) => Self::Full(FrameTokenCache::new(history)),
            Decoder::Streaming(_) => Self::Streaming(StreamingCache::new(history)),
        }
    }

    /// Decodes the greedy action on the newest frame ([1, 3, S, S]) under instruction `ids`
    /// (text-encoder input `input`), keeping what the frame computed as `retention` says.
    pub fn decide(
        &mut self,
        model: &VlaModel,
        ids: &[u32],
        input: &TextInput,
        image: &Tensor,
        retention: FrameRetention,
        valid: &[Vec<bool>],
    ) -> Result<GreedyAction> {
        match self {
            Self::Full(frames) => {
                let (text, window) = frames.observe(model, ids, input, image, retention)?;
                model.decode_cached(&text, &window, valid)
            }
            Self::Streaming(cache) => cache.decide(model, ids, input, image, retention, valid),
        }
    }

    pub fn reset(&mut self) {
        match self {
            Self::Full(frames) => frames.reset(),
            Self::Streaming(cache) => cache.reset(),
        }
    }
}

/// Greedy decoding from the first dimension's logits ([1, bins]): the best valid bin of each
/// dimension, then `step(bin, dim)` for the next dimension's logits.
pub(super) fn greedy(
    valid: &[Vec<bool>],
    mut logits: Tensor,
    mut load: ExpertLoad,
    mut step: impl FnMut(u32, usize) -> Result<(Tensor, DecoderRouting)>,
) -> Result<GreedyAction> {
    let dims = valid.len();
    let (mut bins, mut q) = (Vec::with_capacity(dims), Vec::with_capacity(dims));
    for (dim, mask) in valid.iter().enumerate() {
        let (bin, logit) = masked_argmax(&logits.squeeze(0)?.to_vec1::<f32>()?, mask);
        bins.push(bin);
        q.push(sigmoid(logit));
        if dim + 1 < dims {
            let routing;
            (logits, routing) = step(bin, dim)?;
            routing.add_load_to(&mut load);
        }
    }
    Ok(GreedyAction { bins, q, load })
}

pub(super) fn check_masks(valid: &[Vec<bool>], dims: usize) -> Result<()> {
    if valid.len() != dims {
        candle_core::bail!("{} validity masks for {dims} action dimensions", valid.len());
    }
    Ok(())
}

impl VlaModel {
    /// The reference procedure: for each dimension a full forward pass over the instruction, every
    /// frame of the window and the bins chosen so far. `obs` holds one sample.
    pub fn decode_uncached(&self, obs: &ObservationBatch, valid: &[Vec<bool>]) -> Result<GreedyAction> {
        let dims = self.config().action_dims();
        check_masks(valid, dims)?;
        let mut load = self.empty_load();
        let (mut bins, mut q) = (Vec::with_capacity(dims), Vec::with_capacity(dims));
        for (dim, mask) in valid.iter().enumerate() {
            let chosen = Tensor::new(bins.as_slice(), self.device())?.reshape((1, dim))?;
            let (logits, routing) = self.forward(obs, &chosen)?; // [1, dim + 1, bins]
            routing.add_load_to(&mut load);
            let row = logits.narrow(1, dim, 1)?.flatten_all()?.to_vec1::<f32>()?;
            let (bin, logit) = masked_argmax(&row, mask);
            bins.push(bin);
            q.push(sigmoid(logit));
        }
        Ok(GreedyAction { bins, q, load })
    }
}
