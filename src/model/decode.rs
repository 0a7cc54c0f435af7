//! Argmax decoding over action dimensions: the cached procedure of the full decoder (the
//! streaming decoder's is in `decoder/streaming.rs`), the history window both keep, and the
//! uncached reference procedure (a full forward pass per dimension, as GeRM's released code does).

use std::collections::VecDeque;

use candle_core::{Result, Tensor};

use super::decoder::DecoderCache;
use super::moe::{DecoderRouting, ExpertLoad};
use super::text::TextEncoding;
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

/// The last `capacity` items, oldest first. Until it is full, the window repeats the oldest item
/// so an observation always has `capacity` frames.
#[derive(Debug, Clone)]
pub struct HistoryRing<T> {
    capacity: usize,
    items: VecDeque<T>,
}

impl<T: Clone> HistoryRing<T> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, items: VecDeque::with_capacity(capacity) }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// The items held, oldest first (at most `capacity`, no repeats).
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Exactly `capacity` items, oldest first; empty if nothing was pushed.
    pub fn window(&self) -> Vec<T> {
        if self.items.is_empty() {
            return Vec::new();
        }
        history_window(0, self.items.len() - 1, self.capacity).map(|i| self.items[i].clone()).collect()
    }

    /// The window `push(newest)` would give, without keeping `newest`.
    pub fn window_with(&self, newest: T) -> Vec<T> {
        let kept: Vec<&T> = self.items.iter().skip((self.items.len() + 1).saturating_sub(self.capacity)).collect();
        history_window(0, kept.len(), self.capacity)
            .map(|i| kept.get(i).map_or_else(|| newest.clone(), |&item| item.clone()))
            .collect()
    }
}

/// Whether a control step's new frame stays in the history window for later steps. The policy
/// keeps one frame per frame period; the frames in between are decided on and then dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRetention {
    Keep,
    ThisStepOnly,
}

/// The `history` observation indices of the window that ends at `newest`, oldest first. Where
/// the window reaches back before `first` (the first observation of the episode or instruction),
/// `first` repeats. Training's batches and the policy's history ring both come from this.
pub fn history_window(first: usize, newest: usize, history: usize) -> impl Iterator<Item = usize> {
    (0..history).rev().map(move |back| newest.saturating_sub(back).max(first))
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
    /// Greedy per-dimension argmax with a KV cache: the observation prefix once, then one
    /// single-token step per remaining dimension. `valid[i][b]`: whether bin b of dimension i may
    /// be chosen.
    pub fn decode_cached(&self, text: &TextEncoding, frames: &[Tensor], valid: &[Vec<bool>]) -> Result<GreedyAction> {
        let Some(decoder) = self.full_decoder() else {
            candle_core::bail!("decode_cached runs the full decoder; a streaming one decodes with StreamingCache");
        };
        let cfg = self.config();
        let dims = cfg.action_dims();
        check_masks(valid, dims)?;
        let prefix = self.observation(text, frames)?;
        let p = prefix.dim(1)?;
        let mut cache = DecoderCache::new(cfg.layers, p + dims);
        let (states, routing) = decoder.cached(prefix, &mut cache)?;
        let logits = self.q_logits(&states.narrow(1, p - 1, 1)?, 0)?.squeeze(1)?;
        let mut load = self.empty_load();
        routing.add_load_to(&mut load);
        greedy(valid, logits, load, |bin, dim| {
            let (state, routing) =
                decoder.cached(self.action_tokens(&Tensor::new(&[[bin]], self.device())?, dim)?, &mut cache)?;
            Ok((self.q_logits(&state, dim + 1)?.squeeze(1)?, routing))
        })
    }

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
