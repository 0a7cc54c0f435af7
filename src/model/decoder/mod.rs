//! The decoders over observation and action tokens, one type each: the full decoder reruns the
//! observation window every control step; the streaming decoder keeps the instruction's and each
//! frame's keys and values. Their states between control steps are in `decode/`. Token tensors
//! in, states out: the embeddings and heads around them are `VlaModel`'s.

mod block;
mod full;
mod streaming;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

pub use full::{DecoderCache, FullDecoder};
pub use streaming::{ActionCache, LayerKv, StreamingDecoder};

use super::config::{DecoderKind, VlaConfig};
use super::moe::DecoderRouting;

#[derive(Debug, Clone)]
pub enum Decoder {
    Full(FullDecoder),
    Streaming(StreamingDecoder),
}

impl Decoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.decoder {
            DecoderKind::Full => Self::Full(FullDecoder::new(cfg, vb)?),
            DecoderKind::Streaming => Self::Streaming(StreamingDecoder::new(cfg, vb)?),
        })
    }

    pub fn to_bf16(&self) -> Result<Self> {
        Ok(match self {
            Self::Full(d) => Self::Full(d.to_bf16()?),
            Self::Streaming(d) => Self::Streaming(d.to_bf16()?),
        })
    }

    /// The training (and reference) pass: `prefix` [B, p, D] observation tokens and `actions`
    /// [B, m, D] -> the states [B, m + 1, D] the Q values of dimensions 0..=m are read from.
    pub fn forward(
        &self,
        prefix: &Tensor,
        text_valid: Option<&Tensor>,
        actions: Option<&Tensor>,
    ) -> Result<(Tensor, DecoderRouting)> {
        match self {
            Self::Full(d) => d.forward(prefix, text_valid, actions),
            Self::Streaming(d) => d.forward(prefix, text_valid, actions),
        }
    }
}

/// `valid` [B, L] for the instruction, extended with ones to the `t` keys of the whole sequence.
fn pad_keys(valid: &Tensor, t: usize) -> Result<Tensor> {
    let (b, l) = valid.dims2()?;
    Tensor::cat(&[valid.clone(), Tensor::ones((b, t - l), DType::F32, valid.device())?], 1)
}
