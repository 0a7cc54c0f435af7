//! The instruction encoder: word-level token and position embeddings with a few bidirectional
//! blocks, or trained projections of a frozen sentence encoder's output.

use candle_core::{Module, Result, Tensor};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};

use super::config::{TextKind, VlaConfig};
use super::layers::{linear_rows, masked_mean, norm, Attention, GatedFfn, Norm};

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

/// What the text encoder reads, by `text.kind`.
#[derive(Debug, Clone)]
pub enum TextInput {
    /// `word_level`: [B, L] u32 token ids.
    Ids(Tensor),
    /// `minilm`: the frozen sentence encoder's token states [B, L, E] (padding rows zero) and its
    /// sentence embeddings [B, E].
    Embedded { tokens: Tensor, pooled: Tensor },
}

impl TextInput {
    /// Rows `start..start + len` of the batch.
    pub fn rows(&self, start: usize, len: usize) -> candle_core::Result<Self> {
        Ok(match self {
            Self::Ids(ids) => Self::Ids(ids.narrow(0, start, len)?),
            Self::Embedded { tokens, pooled } => {
                Self::Embedded { tokens: tokens.narrow(0, start, len)?, pooled: pooled.narrow(0, start, len)? }
            }
        })
    }
}

/// The instruction encoder of a `text.kind`.
#[derive(Debug, Clone)]
pub enum TextEncoder {
    WordLevel(WordLevelEncoder),
    Projected(ProjectedText),
}

impl TextEncoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.text.kind {
            TextKind::WordLevel => Self::WordLevel(WordLevelEncoder::new(cfg, vb)?),
            TextKind::Minilm => Self::Projected(ProjectedText::new(cfg, vb)?),
        })
    }

    /// `valid`: [B, L] f32 for padded batches.
    pub fn forward(&self, input: &TextInput, valid: Option<&Tensor>) -> Result<TextEncoding> {
        match (self, input) {
            (Self::WordLevel(e), TextInput::Ids(ids)) => e.forward(ids, valid),
            (Self::Projected(p), TextInput::Embedded { tokens, pooled }) => p.forward(tokens, pooled, valid),
            _ => candle_core::bail!("the instruction input does not fit this model's text encoder kind"),
        }
    }
}

/// A frozen sentence encoder's output mapped to the decoder: its token states projected to
/// `d_model` as the instruction tokens, its sentence embedding projected for FiLM. Each is
/// layer-normed to the scale the word-level encoder's output has.
#[derive(Debug, Clone)]
pub struct ProjectedText {
    token_proj: Linear,
    token_norm: Norm,
    pooled_proj: Linear,
    pooled_norm: Norm,
}

impl ProjectedText {
    fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let width = cfg.text.encoder.as_ref().map_or(0, |e| e.width);
        let d = cfg.d_model;
        Ok(Self {
            token_proj: linear(width, d, vb.pp("token_proj"))?,
            token_norm: norm(d, cfg.norm_eps, vb.pp("token_norm"))?,
            pooled_proj: linear(width, d, vb.pp("pooled_proj"))?,
            pooled_norm: norm(d, cfg.norm_eps, vb.pp("pooled_norm"))?,
        })
    }

    fn forward(&self, tokens: &Tensor, pooled: &Tensor, valid: Option<&Tensor>) -> Result<TextEncoding> {
        Ok(TextEncoding {
            tokens: self.token_norm.forward(&linear_rows(&self.token_proj, tokens)?)?,
            pooled: self.pooled_norm.forward(&self.pooled_proj.forward(pooled)?)?,
            valid: valid.cloned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct WordLevelEncoder {
    tokens: Embedding,
    positions: Tensor,
    blocks: Vec<EncoderBlock>,
    norm: Norm,
}

impl WordLevelEncoder {
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
