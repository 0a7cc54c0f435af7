//! The full decoder: every token of the observation window attends to the instruction and to
//! every frame, so each control step reruns the whole prefix (its frames' vision tokens are kept
//! between steps by `decode::FrameTokenCache`), then one cached step per action dimension.

use candle_core::{Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::VarBuilder;

use super::block::DecoderBlock;
use super::pad_keys;
use crate::model::config::VlaConfig;
use crate::model::moe::DecoderRouting;
use crate::model::text::key_padding_bias;

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
