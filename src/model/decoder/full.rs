//! The full decoder: every token of the observation window attends to the instruction and to
//! every frame, so each control step reruns the whole prefix (its frames' vision tokens are kept
//! between steps by `FrameTokenCache`), then one cached step per action dimension.

use candle_core::{Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::VarBuilder;

use super::block::DecoderBlock;
use super::pad_keys;
use crate::model::config::VlaConfig;
use crate::model::decode::{FrameRetention, HistoryRing};
use crate::model::moe::DecoderRouting;
use crate::model::text::{key_padding_bias, TextEncoding, TextInput};
use crate::model::vla::VlaModel;

#[derive(Debug, Clone)]
pub struct FullDecoder {
    blocks: Vec<DecoderBlock>,
}

impl FullDecoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let blocks = (0..cfg.layers).map(|i| DecoderBlock::new(cfg, vb.pp(format!("decoder.{i}")))).collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    pub fn to_bf16(&self) -> Result<Self> {
        Ok(Self { blocks: self.blocks.iter().map(DecoderBlock::to_bf16).collect::<Result<_>>()? })
    }

    /// `prefix` [B, p, D] (observation tokens) then `actions` [B, m, D] (none: m = 0) -> the last states
    /// [B, m + 1, D] at the positions the Q values of dimensions 0..=m are read from: the last
    /// observation token, then each action token.
    pub fn forward(
        &self,
        prefix: &Tensor,
        text_valid: Option<&Tensor>,
        actions: Option<&Tensor>,
    ) -> Result<(Tensor, DecoderRouting)> {
        let p = prefix.dim(1)?;
        let (mut xs, m) = match actions {
            Some(actions) => (Tensor::cat(&[prefix, actions], 1)?, actions.dim(1)?),
            None => (prefix.clone(), 0),
        };
        let bias = attention_bias(p, m, text_valid, xs.device())?;
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for block in &self.blocks {
            let layer;
            (xs, layer) = block.forward(&xs, Some(&bias), None)?;
            routing.layers.push(layer);
        }
        Ok((xs.narrow(1, p - 1, m + 1)?, routing))
    }

    /// `xs` [B, T, D] through every layer, each appending its keys and values to its cache.
    /// The prefix is bidirectional and unpadded (batch-1 inference), so no mask is needed.
    pub fn cached(&self, mut xs: Tensor, cache: &mut DecoderCache) -> Result<(Tensor, DecoderRouting)> {
        let mut routing = DecoderRouting { layers: Vec::with_capacity(self.blocks.len()) };
        for (block, kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let layer;
            (xs, layer) = block.forward(&xs, None, Some(kv))?;
            routing.layers.push(layer);
        }
        Ok((xs, routing))
    }
}

/// Key-value caches of every decoder layer for one control step.
pub struct DecoderCache {
    layers: Vec<KvCache>,
}

impl DecoderCache {
    pub fn new(layers: usize, max_len: usize) -> Self {
        Self { layers: (0..layers).map(|_| KvCache::new(2, max_len)).collect() }
    }
}

/// Additive bias [B or 1, 1, T, T] with T = p + m. Observation queries see every (valid)
/// observation key; the action token at position p + j also sees action tokens 0..=j.
fn attention_bias(p: usize, m: usize, text_valid: Option<&Tensor>, device: &Device) -> Result<Tensor> {
    let t = p + m;
    let mut causal = vec![0f32; t * t];
    for q in 0..t {
        for k in p..t {
            if k > q {
                causal[q * t + k] = f32::NEG_INFINITY;
            }
        }
    }
    let causal = Tensor::from_vec(causal, (1, 1, t, t), device)?;
    match text_valid {
        None => Ok(causal),
        // Every key after the instruction is a real token.
        Some(valid) => causal.broadcast_add(&key_padding_bias(&pad_keys(valid, t)?)?),
    }
}

/// The full decoder's memory between control steps: vision tokens of the frames still inside
/// the history window, so a control step encodes only its new frame. FiLM makes them depend on
/// the instruction: a new instruction clears them.
#[derive(Debug, Clone)]
pub struct FrameTokenCache {
    instruction: Option<(Vec<u32>, TextEncoding)>,
    frames: HistoryRing<Tensor>,
}

impl FrameTokenCache {
    pub fn new(history: usize) -> Self {
        Self { instruction: None, frames: HistoryRing::new(history) }
    }

    /// Encodes the newest frame ([1, 3, S, S]) under the instruction whose token ids are `ids` and
    /// whose text-encoder input is `input`, keeps its tokens as `retention` says, and returns the
    /// encoded instruction with the window of vision tokens that ends at it, oldest first.
    pub fn observe(
        &mut self,
        model: &VlaModel,
        ids: &[u32],
        input: &TextInput,
        image: &Tensor,
        retention: FrameRetention,
    ) -> Result<(TextEncoding, Vec<Tensor>)> {
        let text = match &self.instruction {
            Some((cached, text)) if cached == ids => text.clone(),
            _ => {
                let text = model.encode_text(input, None)?;
                self.frames.clear();
                self.instruction = Some((ids.to_vec(), text.clone()));
                text
            }
        };
        let tokens = model.encode_frame(image, &text)?;
        let window = self.frames.window_with(tokens.clone());
        if retention == FrameRetention::Keep {
            self.frames.push(tokens);
        }
        Ok((text, window))
    }

    /// Forgets everything (a new episode: old frames must not leak into it).
    pub fn reset(&mut self) {
        self.instruction = None;
        self.frames.clear();
    }
}
