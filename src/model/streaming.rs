//! The streaming decoder's passes: the instruction's and each frame's keys and values computed
//! once and kept (`decode::StreamingCache`), a control step running only its new frame, the start
//! token and the action tokens through the decoder, with the action tokens' attention biased by
//! the frames' ages.

use candle_core::{Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;

use super::moe::DecoderRouting;
use super::text::TextEncoding;
use super::vla::VlaModel;

impl VlaModel {
    /// Where the instruction, the frames and the actions sit in a sequence whose observation
    /// prefix has `p` tokens.
    pub(super) fn layout(&self, p: usize) -> Result<StreamingLayout> {
        let frames = self.cfg.frame_tokens();
        if p <= frames {
            candle_core::bail!("an observation of {p} tokens holds no instruction before its {frames} frame tokens");
        }
        Ok(StreamingLayout { text: p - frames, history: self.cfg.history, tokens_per_frame: self.cfg.tokens_per_frame })
    }

    /// Streaming decoder: the instruction's keys and values in every layer. Instruction tokens
    /// attend only to each other, so these hold for as long as the instruction does.
    pub fn instruction_kv(&self, text: &TextEncoding) -> Result<LayerKv> {
        let mut xs = text.tokens.clone();
        let mut kv = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            (xs, _) = block.forward_over(&xs, None, |k, v| {
                kv.push((k.clone(), v.clone()));
                Ok((k.clone(), v.clone()))
            })?;
        }
        Ok(kv)
    }

    /// Streaming decoder, one control step's observation pass: the new frame's vision tokens
    /// ([1, t, D]) and the start token go through every layer, attending to the instruction and
    /// to the stored keys and values of the older frames in `window` (history slots oldest first;
    /// `None` is the new frame, always the last slot). Returns the new frame's keys and values
    /// to store, the cache the action steps continue from, and the first dimension's Q logits
    /// [1, bins].
    pub fn stream_observe(
        &self,
        instruction: &LayerKv,
        window: &[Option<&LayerKv>],
        frame: &Tensor,
    ) -> Result<(LayerKv, ActionCache, Tensor, DecoderRouting)> {
        let (Some(start), Some(None)) = (&self.action_start, window.last()) else {
            candle_core::bail!("stream_observe needs a streaming decoder and the new frame in the last slot");
        };
        if window.len() != self.cfg.history || instruction.len() != self.blocks.len() {
            candle_core::bail!("a window of {} slots for a history of {}", window.len(), self.cfg.history);
        }
        let device = self.device().clone();
        let t = self.cfg.tokens_per_frame;
        let p = instruction[0].0.dim(2)? + self.cfg.frame_tokens();
        let seq = self.layout(p)?;
        let mut xs = Tensor::cat(&[&self.place_frame(frame, 0)?, start], 1)?; // [1, t + 1, D]
                                                                              // Queries are the newest frame's tokens and the start token; keys everything up to it.
        let mask = seq.mask(p - t..p + 1, p + 1, &device)?;
        let ages = seq.key_ages(p + 1 + self.cfg.action_dims(), &device)?;
        let start_row = Tensor::from_vec((0..=t).map(|q| f32::from(q == t)).collect::<Vec<_>>(), (1, 1, t + 1, 1), &device)?;
        let (mut new_frame, mut actions) = (Vec::with_capacity(self.blocks.len()), ActionCache::default());
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (layer, block) in self.blocks.iter().enumerate() {
            let age = block.key_age_bias(&ages)?.expect("a streaming block has an age bias"); // [1, H, 1, S + dims]
            let bias = mask.broadcast_add(&age.narrow(3, 0, p + 1)?.broadcast_mul(&start_row)?)?;
            let mut cache = KvCache::new(2, p + self.cfg.action_dims());
            let (ys, layer_routing) = block.forward_over(&xs, Some(&bias), |k, v| {
                let (k_frame, v_frame) = (k.narrow(2, 0, t)?, v.narrow(2, 0, t)?);
                let (text_k, text_v) = &instruction[layer];
                let (mut keys, mut values) = (vec![text_k.clone()], vec![text_v.clone()]);
                for slot in &window[..window.len() - 1] {
                    let (k, v) = match slot {
                        Some(stored) => (stored[layer].0.clone(), stored[layer].1.clone()),
                        None => (k_frame.clone(), v_frame.clone()),
                    };
                    keys.push(k);
                    values.push(v);
                }
                keys.push(k.clone());
                values.push(v.clone());
                new_frame.push((k_frame.contiguous()?, v_frame.contiguous()?));
                cache.append(&Tensor::cat(&keys, 2)?, &Tensor::cat(&values, 2)?)
            })?;
            xs = ys;
            routing.layers.push(layer_routing);
            actions.layers.push((cache, age));
        }
        let logits = self.q_logits(&xs.narrow(1, t, 1)?, 0)?.squeeze(1)?;
        Ok((new_frame, actions, logits, routing))
    }

    /// Streaming decoder, one action step after `stream_observe`: like `step`, with the action
    /// token's attention biased by the frames' ages.
    pub fn stream_step(&self, bins: &Tensor, dim: usize, cache: &mut ActionCache) -> Result<(Tensor, DecoderRouting)> {
        let mut xs = self.action_tokens(&bins.unsqueeze(1)?, dim)?;
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (block, (kv, age)) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let bias = age.narrow(3, 0, kv.current_seq_len() + 1)?;
            let (ys, layer) = block.forward(&xs, Some(&bias), Some(kv))?;
            xs = ys;
            routing.layers.push(layer);
        }
        Ok((self.q_logits(&xs, dim + 1)?.squeeze(1)?, routing))
    }
}

/// Keys and values [1, H, n, hd] of every decoder layer for tokens whose states never change
/// in the streaming decoder (the instruction's, one frame's).
pub type LayerKv = Vec<(Tensor, Tensor)>;

/// The streaming decoder's per-decision state: each layer's cache of keys and values up to the
/// start token, and its age bias over those keys and the action tokens' ([1, H, 1, S]).
#[derive(Default)]
pub struct ActionCache {
    layers: Vec<(KvCache, Tensor)>,
}

/// Token positions of a streaming decoder's sequence: `text` instruction tokens, `history`
/// frames of `tokens_per_frame` oldest first, then the start token and the action tokens.
pub(super) struct StreamingLayout {
    text: usize,
    history: usize,
    tokens_per_frame: usize,
}

impl StreamingLayout {
    /// The history slot of position `i`, if it is a frame token.
    fn slot(&self, i: usize) -> Option<usize> {
        let frames = self.history * self.tokens_per_frame;
        (i >= self.text && i < self.text + frames).then(|| (i - self.text) / self.tokens_per_frame)
    }

    /// Whether query `q` may attend to key `k`.
    fn sees(&self, q: usize, k: usize) -> bool {
        let observation = self.text + self.history * self.tokens_per_frame;
        if q >= observation {
            return k <= q; // start and action tokens: everything before them, causally
        }
        match (self.slot(q), self.slot(k)) {
            (None, key) => key.is_none() && k < self.text, // instruction: itself
            (Some(_), None) => k < self.text,              // a frame: the instruction ...
            (Some(a), Some(b)) => a == b,                  // ... and its own frame
        }
    }

    /// Additive mask [1, 1, |queries|, keys]: 0 where a query sees a key, -inf elsewhere.
    pub(super) fn mask(&self, queries: std::ops::Range<usize>, keys: usize, device: &Device) -> Result<Tensor> {
        let rows = queries.len();
        let values: Vec<f32> =
            queries.flat_map(|q| (0..keys).map(move |k| if self.sees(q, k) { 0.0 } else { f32::NEG_INFINITY })).collect();
        Tensor::from_vec(values, (1, 1, rows, keys), device)
    }

    /// One-hot [history, keys]: row a marks the keys of the frame of age a (0 = newest).
    pub(super) fn key_ages(&self, keys: usize, device: &Device) -> Result<Tensor> {
        let mut values = vec![0f32; self.history * keys];
        for k in 0..keys {
            if let Some(slot) = self.slot(k) {
                values[(self.history - 1 - slot) * keys + k] = 1.0;
            }
        }
        Tensor::from_vec(values, (self.history, keys), device)
    }
}
