//! The instruction encoder: token and position embeddings, a few bidirectional blocks.

use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, Embedding, VarBuilder};

use super::config::VlaConfig;
use super::layers::{masked_mean, norm, Attention, GatedFfn, Norm};

#[derive(Debug, Clone)]
struct EncoderBlock {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    ffn: GatedFfn,
}

impl EncoderBlock {
    fn forward(&self, xs: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?, bias, None)?)?;
        &xs + self.ffn.forward(&self.norm2.forward(&xs)?)?
    }
}

/// The encoded instruction.
#[derive(Debug, Clone)]
pub struct TextEncoding {
    /// [B, L, D]: tokens for the decoder.
    pub tokens: Tensor,
    /// [B, D]: mean over valid tokens, the FiLM conditioning vector.
    pub pooled: Tensor,
    /// [B, L] f32 (1 valid, 0 padding), or None when nothing is padded.
    pub valid: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokens: Embedding,
    positions: Tensor,
    blocks: Vec<EncoderBlock>,
    norm: Norm,
}

impl TextEncoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let (d, t) = (cfg.d_model, &cfg.text);
        let blocks = (0..t.layers)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(EncoderBlock {
                    norm1: norm(d, cfg.norm_eps, vb.pp("norm1"))?,
                    attn: Attention::new(d, cfg.heads, vb.pp("attn"))?,
                    norm2: norm(d, cfg.norm_eps, vb.pp("norm2"))?,
                    ffn: GatedFfn::new(d, t.ffn_hidden, cfg.ffn.expert_act, vb.pp("ffn"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            tokens: embedding(t.vocab_size, d, vb.pp("tokens"))?,
            positions: vb.get_with_hints((t.max_tokens, d), "positions", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
            blocks,
            norm: norm(d, cfg.norm_eps, vb.pp("norm"))?,
        })
    }

    /// `ids`: [B, L] u32 with L <= max_tokens; `valid`: [B, L] f32 for padded batches.
    pub fn forward(&self, ids: &Tensor, valid: Option<&Tensor>) -> Result<TextEncoding> {
        let (_, l) = ids.dims2()?;
        let mut xs = self.tokens.forward(ids)?.broadcast_add(&self.positions.narrow(0, 0, l)?)?;
        let bias = valid.map(key_padding_bias).transpose()?;
        for block in &self.blocks {
            xs = block.forward(&xs, bias.as_ref())?;
        }
        let tokens = self.norm.forward(&xs)?;
        let pooled = match valid {
            Some(valid) => masked_mean(&tokens, valid)?,
            None => tokens.mean(1)?,
        };
        Ok(TextEncoding { tokens, pooled, valid: valid.cloned() })
    }
}

/// Additive bias [B, 1, 1, L] that hides padded keys.
pub fn key_padding_bias(valid: &Tensor) -> Result<Tensor> {
    ((valid - 1.0)? * 1e9)?.unsqueeze(1)?.unsqueeze(1)
}
