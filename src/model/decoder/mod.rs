//! The decoders over observation and action tokens, one type each: the full decoder reruns the
//! observation window every control step; the streaming decoder keeps the instruction's and each
//! frame's keys and values. Each has its own state between control steps.

mod block;
mod full;
mod streaming;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

pub use full::{DecoderCache, FrameTokenCache, FullDecoder};
pub use streaming::{ActionCache, LayerKv, StreamingCache, StreamingDecoder};

use super::config::{DecoderKind, VlaConfig};
use super::decode::{FrameRetention, GreedyAction};
use super::moe::DecoderRouting;
use super::text::TextInput;
use super::vla::VlaModel;

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

/// `valid` [B, L] for the instruction, extended with ones to the `t` keys of the whole sequence.
fn pad_keys(valid: &Tensor, t: usize) -> Result<Tensor> {
    let (b, l) = valid.dims2()?;
    Tensor::cat(&[valid.clone(), Tensor::ones((b, t - l), DType::F32, valid.device())?], 1)
}
