//! The streaming decoder: the instruction attends only to itself and each frame only to the
//! instruction and itself, so their keys and values are computed once and kept
//! (`decode::StreamingCache`); a control step runs only its new frame, a start token and the action
//! tokens through the decoder, the action tokens' attention biased by the frames' ages.

use candle_core::{Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::VarBuilder;

use super::block::DecoderBlock;
use super::pad_keys;
use crate::model::config::VlaConfig;
use crate::model::moe::DecoderRouting;
use crate::model::text::{key_padding_bias, TextEncoding};

#[derive(Debug, Clone)]
pub struct StreamingDecoder {
    blocks: Vec<DecoderBlock>,
    /// Per layer, [heads, history]: the bias an action token's attention adds to the keys of a
    /// frame of each age (0 = newest).
    age_bias: Vec<Tensor>,
    /// [1, 1, D]: the token before the action tokens whose state gives the first dimension's Q
    /// values (the last frame token cannot: it sees only its own frame).
    action_start: Tensor,
    pub(crate) history: usize,
    tokens_per_frame: usize,
    action_dims: usize,
}

impl StreamingDecoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let (mut blocks, mut age_bias) = (Vec::with_capacity(cfg.layers), Vec::with_capacity(cfg.layers));
        for i in 0..cfg.layers {
            let vb = vb.pp(format!("decoder.{i}"));
            blocks.push(DecoderBlock::new(cfg, vb.clone())?);
            // Zero: no preference for any age until training learns one.
            age_bias.push(vb.get_with_hints((cfg.heads, cfg.history), "age_bias", candle_nn::Init::Const(0.0))?);
        }
        let small = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        Ok(Self {
            blocks,
            age_bias,
            action_start: vb.get_with_hints((1, 1, cfg.d_model), "action_start", small)?,
            history: cfg.history,
            tokens_per_frame: cfg.tokens_per_frame,
            action_dims: cfg.action_dims(),
        })
    }

    pub fn to_bf16(&self) -> Result<Self> {
        Ok(Self { blocks: self.blocks.iter().map(DecoderBlock::to_bf16).collect::<Result<_>>()?, ..self.clone() })
    }

    /// Where the instruction, the frames and the actions sit in a sequence whose observation
    /// prefix has `p` tokens.
    fn layout(&self, p: usize) -> Result<StreamingLayout> {
        let frames = self.history * self.tokens_per_frame;
        if p <= frames {
            candle_core::bail!("an observation of {p} tokens holds no instruction before its {frames} frame tokens");
        }
        Ok(StreamingLayout { text: p - frames, history: self.history, tokens_per_frame: self.tokens_per_frame })
    }

    /// Layer `layer`'s age bias per key: `ages` [history, S] one-hot (see `key_ages`) -> [1, H, 1, S].
    fn key_age_bias(&self, layer: usize, ages: &Tensor) -> Result<Tensor> {
        self.age_bias[layer].matmul(ages)?.unsqueeze(1)?.unsqueeze(0)
    }

    /// `prefix` [B, p, D] (observation tokens), the start token, then `actions` [B, m, D] (none: m = 0) -> the
    /// last states [B, m + 1, D] of the start token and each action token.
    pub fn forward(
        &self,
        prefix: &Tensor,
        text_valid: Option<&Tensor>,
        actions: Option<&Tensor>,
    ) -> Result<(Tensor, DecoderRouting)> {
        let (b, p, d) = prefix.dims3()?;
        let start = self.action_start.broadcast_as((b, 1, d))?.contiguous()?;
        let (mut xs, m) = match actions {
            Some(actions) => (Tensor::cat(&[prefix, &start, actions], 1)?, actions.dim(1)?),
            None => (Tensor::cat(&[prefix, &start], 1)?, 0),
        };
        let device = xs.device().clone();
        let seq = self.layout(p)?;
        let t = p + 1 + m;
        let mask = seq.mask(0..t, t, &device)?;
        let mask = match text_valid {
            Some(valid) => mask.broadcast_add(&key_padding_bias(&pad_keys(valid, t)?)?)?,
            None => mask,
        };
        // Only the start and action tokens (positions p..) see frames by age.
        let action_rows = Tensor::from_vec((0..t).map(|q| f32::from(q >= p)).collect::<Vec<_>>(), (1, 1, t, 1), &device)?;
        let ages = seq.key_ages(t, &device)?;
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (i, block) in self.blocks.iter().enumerate() {
            let bias = mask.broadcast_add(&self.key_age_bias(i, &ages)?.broadcast_mul(&action_rows)?)?;
            let layer;
            (xs, layer) = block.forward(&xs, Some(&bias), None)?;
            routing.layers.push(layer);
        }
        Ok((xs.narrow(1, p, m + 1)?, routing))
    }

    /// The instruction's keys and values in every layer. Instruction tokens attend only to each
    /// other, so these hold for as long as the instruction does.
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

    /// One control step's observation pass: the new frame's placed vision tokens ([1, t, D]) and
    /// the start token go through every layer, attending to the instruction and to the stored keys
    /// and values of the older frames in `window` (history slots oldest first; `None` is the new
    /// frame, always the last slot). Returns the new frame's keys and values to store, the cache
    /// the action steps continue from, and the start token's state [1, 1, D].
    pub fn observe(
        &self,
        instruction: &LayerKv,
        window: &[Option<&LayerKv>],
        frame: &Tensor,
    ) -> Result<(LayerKv, ActionCache, Tensor, DecoderRouting)> {
        if window.len() != self.history || !matches!(window.last(), Some(None)) || instruction.len() != self.blocks.len() {
            candle_core::bail!("a window of {} slots for a history of {}, the new frame last", window.len(), self.history);
        }
        let device = frame.device().clone();
        let t = self.tokens_per_frame;
        let p = instruction[0].0.dim(2)? + self.history * t;
        let seq = self.layout(p)?;
        let mut xs = Tensor::cat(&[frame, &self.action_start], 1)?; // [1, t + 1, D]
                                                                    // Queries are the newest frame's tokens and the start token; keys everything up to it.
        let mask = seq.mask(p - t..p + 1, p + 1, &device)?;
        let ages = seq.key_ages(p + 1 + self.action_dims, &device)?;
        let start_row = Tensor::from_vec((0..=t).map(|q| f32::from(q == t)).collect::<Vec<_>>(), (1, 1, t + 1, 1), &device)?;
        let (mut new_frame, mut actions) = (Vec::with_capacity(self.blocks.len()), ActionCache::default());
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (layer, block) in self.blocks.iter().enumerate() {
            let age = self.key_age_bias(layer, &ages)?; // [1, H, 1, S + dims]
            let bias = mask.broadcast_add(&age.narrow(3, 0, p + 1)?.broadcast_mul(&start_row)?)?;
            let mut cache = KvCache::new(2, p + self.action_dims);
            let layer_routing;
            (xs, layer_routing) = block.forward_over(&xs, Some(&bias), |k, v| {
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
            routing.layers.push(layer_routing);
            actions.layers.push((cache, age));
        }
        Ok((new_frame, actions, xs.narrow(1, t, 1)?, routing))
    }

    /// One action step after `observe`: the action token `xs` [1, 1, D] attends to the cache, its
    /// attention biased by the frames' ages; its state [1, 1, D] comes out.
    pub fn step(&self, mut xs: Tensor, cache: &mut ActionCache) -> Result<(Tensor, DecoderRouting)> {
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (block, (kv, age)) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let bias = age.narrow(3, 0, kv.current_seq_len() + 1)?;
            let layer;
            (xs, layer) = block.forward(&xs, Some(&bias), Some(kv))?;
            routing.layers.push(layer);
        }
        Ok((xs, routing))
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
struct StreamingLayout {
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
    fn mask(&self, queries: std::ops::Range<usize>, keys: usize, device: &Device) -> Result<Tensor> {
        let rows = queries.len();
        let values: Vec<f32> =
            queries.flat_map(|q| (0..keys).map(move |k| if self.sees(q, k) { 0.0 } else { f32::NEG_INFINITY })).collect();
        Tensor::from_vec(values, (1, 1, rows, keys), device)
    }

    /// One-hot [history, keys]: row a marks the keys of the frame of age a (0 = newest).
    fn key_ages(&self, keys: usize, device: &Device) -> Result<Tensor> {
        let mut values = vec![0f32; self.history * keys];
        for k in 0..keys {
            if let Some(slot) = self.slot(k) {
                values[(self.history - 1 - slot) * keys + k] = 1.0;
            }
        }
        Tensor::from_vec(values, (self.history, keys), device)
    }
}
