//! The VLA Q-network: instruction and frame encoders, a MoE decoder over observation and action
//! tokens, and a per-dimension Q head (with, optionally, a behaviour head that filters its argmax:
//! discrete BCQ, `behaviour.rs`).

use candle_core::{Device, IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, Embedding, Linear, VarBuilder};

use super::behaviour::filter_q;
use super::config::{ActionHeadKind, VlaConfig};
use super::decoder::{Decoder, FullDecoder, StreamingDecoder};
use super::layers::{linear_rows, norm, Norm};
use super::moe::{empty_load, DecoderRouting, ExpertLoad};
use super::text::{TextEncoder, TextEncoding, TextInput};
use super::vision::VisionEncoder;

/// One observation batch for the full forward pass.
#[derive(Debug, Clone)]
pub struct ObservationBatch {
    /// The instruction: [B, L] token ids, or a frozen sentence encoder's output.
    pub text: TextInput,
    /// [B, L] f32, 1 for real tokens and 0 for padding; None when nothing is padded.
    pub text_valid: Option<Tensor>,
    /// [B, history, 3, S, S] f32 normalised frames, oldest first.
    pub frames: Tensor,
}

/// An observation batch after the instruction and frame encoders: what the decoder reads.
/// Training with frozen encoders keeps these per step instead of re-encoding pixels.
#[derive(Debug, Clone)]
pub struct EncodedObservation {
    /// [B, L, D].
    pub text_tokens: Tensor,
    /// [B, L] f32, 1 for real tokens and 0 for padding; None when nothing is padded.
    pub text_valid: Option<Tensor>,
    /// [B, history, tokens_per_frame, D], oldest first.
    pub frames: Tensor,
}

/// Rows `start..start + len` of an optional [B, ...] tensor.
fn rows_of(t: &Option<Tensor>, start: usize, len: usize) -> Result<Option<Tensor>> {
    t.as_ref().map(|t| t.narrow(0, start, len)).transpose()
}

impl ObservationBatch {
    /// Rows `start..start + len` of the batch.
    pub fn rows(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            text: self.text.rows(start, len)?,
            text_valid: rows_of(&self.text_valid, start, len)?,
            frames: self.frames.narrow(0, start, len)?,
        })
    }
}

impl EncodedObservation {
    /// Rows `start..start + len` of the batch.
    pub fn rows(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            text_tokens: self.text_tokens.narrow(0, start, len)?,
            text_valid: rows_of(&self.text_valid, start, len)?,
            frames: self.frames.narrow(0, start, len)?,
        })
    }
}

/// Q logit of every bin before any data: sigmoid(-4) = 0.018. A pessimistic start keeps the
/// bootstrapped max over bins near 0 until data raises it; an optimistic one (candle's default init
/// puts the max of 256 sigmoids near 0.98) would make every target a constant near 1. The head's
/// weights start small (not zero) so that gradients reach the decoder from the first update and an
/// untrained model's choices still depend on its input.
pub const INITIAL_Q_LOGIT: f64 = -4.0;
const INITIAL_Q_WEIGHT_STD: f64 = 0.01;

/// Whether a weight belongs to the instruction path: the instruction encoder (or, with a frozen
/// sentence encoder, its projections) and the FiLM layers through which the instruction
/// conditions the frame encoder. Training can freeze these before the rest of the frame encoder.
pub fn is_instruction_weight(name: &str) -> bool {
    name.starts_with("text.") || name.contains(".film.")
}

/// Maps decoder states to Q logits over the bins of their action dimension.
#[derive(Debug, Clone)]
enum QHead {
    Shared(Linear),
    /// `weight`: [dims, bins, D], `bias`: [dims, bins].
    PerDimension {
        weight: Tensor,
        bias: Tensor,
    },
}

impl QHead {
    fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let (d, bins, dims) = (cfg.d_model, cfg.actions.bins, cfg.action_dims());
        let small = candle_nn::Init::Randn { mean: 0.0, stdev: INITIAL_Q_WEIGHT_STD };
        let pessimistic = candle_nn::Init::Const(INITIAL_Q_LOGIT);
        Ok(match cfg.action_head {
            ActionHeadKind::Shared => Self::Shared(Linear::new(
                vb.get_with_hints((bins, d), "weight", small)?,
                Some(vb.get_with_hints(bins, "bias", pessimistic)?),
            )),
            ActionHeadKind::PerDimension => Self::PerDimension {
                weight: vb.get_with_hints((dims, bins, d), "weight", small)?,
                bias: vb.get_with_hints((dims, bins), "bias", pessimistic)?,
            },
        })
    }

    /// `hidden`: [B, T, D], position t belonging to dimension `first + t` -> [B, T, bins].
    fn forward(&self, hidden: &Tensor, first: usize) -> Result<Tensor> {
        match self {
            Self::Shared(linear) => linear_rows(linear, hidden),
            Self::PerDimension { weight, bias } => {
                let t = hidden.dim(1)?;
                let w = weight.narrow(0, first, t)?.transpose(1, 2)?; // [T, D, bins]
                let logits = hidden.transpose(0, 1)?.contiguous()?.matmul(&w)?; // [T, B, bins]
                logits.broadcast_add(&bias.narrow(0, first, t)?.unsqueeze(1)?)?.transpose(0, 1)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct VlaModel {
    cfg: VlaConfig,
    text: TextEncoder,
    vision: VisionEncoder,
    /// [slots, tokens_per_frame, D]: which token of a frame a token is and, for the full decoder,
    /// where in the history window the frame sits (`VlaConfig::frame_position_slots`).
    frame_positions: Tensor,
    bin_embedding: Embedding,
    /// [dims, D]: which action dimension a token carries.
    dim_embedding: Tensor,
    decoder: Decoder,
    norm: Norm,
    head: QHead,
    behaviour: Option<BehaviourHead>,
}

/// Discrete BCQ's behaviour model: logits of the data's policy over the bins of each dimension,
/// read from the same decoder states as the Q head.
#[derive(Debug, Clone)]
struct BehaviourHead {
    head: QHead,
    /// `VlaConfig::behaviour_filter`.
    threshold: f64,
    /// [dims, bins]: 1 for the bins `actions.supported` allows (every bin without it).
    supported: Tensor,
}

impl BehaviourHead {
    fn new(cfg: &VlaConfig, threshold: f64, vb: VarBuilder) -> Result<Self> {
        let (bins, dims) = (cfg.actions.bins, cfg.action_dims());
        let mut supported = Vec::with_capacity(dims * bins);
        for dim in 0..dims {
            let mask = cfg.actions.supported_mask(dim).map_err(|[lo, hi]| {
                candle_core::Error::Msg(format!("actions.supported of dimension {dim}: range [{lo}, {hi}]"))
            })?;
            supported.extend(mask.into_iter().map(|s| if s { 1f32 } else { 0.0 }));
        }
        Ok(Self {
            head: QHead::new(cfg, vb.clone())?,
            threshold,
            supported: Tensor::from_vec(supported, (dims, bins), vb.device())?,
        })
    }
}

/// What the training forward pass returns.
pub struct TrainOutput {
    /// [B, m + 1, bins]: unfiltered Q logits, row i for dimension i.
    pub q: Tensor,
    /// [B, m + 1, bins]: behaviour logits, for a model with a behaviour head.
    pub behaviour: Option<Tensor>,
    /// The mean load-balancing loss over the decoder's mixture layers (zero for a dense decoder).
    pub balance: Tensor,
}

impl VlaModel {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let small = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        Ok(Self {
            cfg: cfg.clone(),
            text: TextEncoder::new(cfg, vb.pp("text"))?,
            vision: VisionEncoder::new(cfg, vb.pp("vision"))?,
            frame_positions: vb.get_with_hints(
                (cfg.frame_position_slots(), cfg.tokens_per_frame, d),
                "frame_positions",
                small,
            )?,
            bin_embedding: embedding(bin_embeddings(cfg), d, vb.pp("bin_embedding"))?,
            dim_embedding: vb.get_with_hints((cfg.action_dims(), d), "dim_embedding", small)?,
            decoder: Decoder::new(cfg, vb.clone())?,
            norm: norm(d, cfg.norm_eps, vb.pp("norm"))?,
            head: QHead::new(cfg, vb.pp("q_head"))?,
            behaviour: match cfg.behaviour_filter {
                Some(threshold) => Some(BehaviourHead::new(cfg, threshold, vb.pp("behaviour_head"))?),
                None => None,
            },
        })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.cfg
    }

    /// The model with its decoder's attention and feed-forward weights rounded to bf16 and held
    /// in bf16 for batch-1 steps (`WeightPrecision::Bf16`): an inference model, not for training.
    pub fn to_bf16_decoder(&self) -> Result<Self> {
        Ok(Self { decoder: self.decoder.to_bf16()?, ..self.clone() })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn full_decoder(&self) -> Option<&FullDecoder> {
        match &self.decoder {
            Decoder::Full(d) => Some(d),
            Decoder::Streaming(_) => None,
        }
    }

    pub fn streaming_decoder(&self) -> Option<&StreamingDecoder> {
        match &self.decoder {
            Decoder::Streaming(d) => Some(d),
            Decoder::Full(_) => None,
        }
    }

    pub fn device(&self) -> &Device {
        self.frame_positions.device()
    }

    pub fn empty_load(&self) -> ExpertLoad {
        empty_load(self.cfg.layers, &self.cfg.ffn)
    }

    pub fn encode_text(&self, text: &TextInput, valid: Option<&Tensor>) -> Result<TextEncoding> {
        self.text.forward(text, valid)
    }

    /// `images`: [B, 3, S, S] -> vision tokens [B, tokens_per_frame, D] (no position yet).
    pub fn encode_frame(&self, images: &Tensor, text: &TextEncoding) -> Result<Tensor> {
        self.vision.forward(images, &text.pooled)
    }

    /// The observation tokens [B, L + history * tokens_per_frame, D]: text, then frames oldest
    /// to newest. `frames` holds exactly `history` vision-token tensors.
    pub fn observation(&self, text: &TextEncoding, frames: &[Tensor]) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(frames.len() + 1);
        parts.push(text.tokens.clone());
        for (slot, f) in frames.iter().enumerate() {
            parts.push(self.place_frame(f, slot)?);
        }
        Tensor::cat(&parts, 1)
    }

    /// Vision tokens [B, t, D] of the frame in history slot `slot` with their positions (a
    /// streaming decoder has one slot: a frame's tokens do not depend on its age).
    pub(super) fn place_frame(&self, tokens: &Tensor, slot: usize) -> Result<Tensor> {
        let slot = slot.min(self.cfg.frame_position_slots() - 1);
        tokens.broadcast_add(&self.frame_positions.i(slot)?)
    }

    /// Action tokens for dimensions `first..first + m`: `bins`: [B, m] u32 -> [B, m, D].
    pub fn action_tokens(&self, bins: &Tensor, first: usize) -> Result<Tensor> {
        let (_, m) = bins.dims2()?;
        let ids = match self.cfg.action_head {
            ActionHeadKind::Shared => bins.clone(),
            ActionHeadKind::PerDimension => {
                // Dimension i's bins sit at rows i * bins.. of the embedding table.
                let n = self.cfg.actions.bins as u32;
                let offsets: Vec<u32> = (first..first + m).map(|i| i as u32 * n).collect();
                bins.broadcast_add(&Tensor::from_vec(offsets, (1, m), bins.device())?)?
            }
        };
        self.bin_embedding.forward(&ids)?.broadcast_add(&self.dim_embedding.narrow(0, first, m)?)
    }

    /// Q logits from hidden states [B, T, D] whose position t belongs to dimension `first + t`
    /// -> [B, T, bins]; with a behaviour head, the bins it rules out are dropped far below the
    /// rest, so no argmax or max picks them.
    pub(super) fn q_logits(&self, hidden: &Tensor, first: usize) -> Result<Tensor> {
        let (q, behaviour) = self.heads(hidden, first)?;
        match (&self.behaviour, behaviour) {
            (Some(b), Some(behaviour)) => filter_q(&q, &behaviour, &b.supported.narrow(0, first, q.dim(1)?)?, b.threshold),
            _ => Ok(q),
        }
    }

    /// Unfiltered Q logits and, with a behaviour head, behaviour logits, each [B, T, bins].
    fn heads(&self, hidden: &Tensor, first: usize) -> Result<(Tensor, Option<Tensor>)> {
        let hidden = self.norm.forward(hidden)?;
        let behaviour = self.behaviour.as_ref().map(|b| b.head.forward(&hidden, first)).transpose()?;
        Ok((self.head.forward(&hidden, first)?, behaviour))
    }

    /// The reference (training) forward pass. `bins`: [B, m] u32, the chosen bins of dimensions
    /// 0..m with m < dims. Returns Q logits [B, m + 1, bins]: row i belongs to dimension i and is
    /// read at the position before that dimension's token (the last observation token for i = 0).
    pub fn forward(&self, obs: &ObservationBatch, bins: &Tensor) -> Result<(Tensor, DecoderRouting)> {
        let encoded = self.encode(obs)?;
        let (states, routing) = self.decode_states(&self.prefix(&encoded)?, encoded.text_valid.as_ref(), bins)?;
        Ok((self.q_logits(&states, 0)?, routing))
    }

    /// The training forward pass on observations already through the encoders: the unfiltered Q
    /// logits (the loss needs every bin's), the behaviour logits and the balance loss.
    pub fn forward_train(&self, obs: &EncodedObservation, bins: &Tensor) -> Result<TrainOutput> {
        let (states, routing) = self.decode_states(&self.prefix(obs)?, obs.text_valid.as_ref(), bins)?;
        let (q, behaviour) = self.heads(&states, 0)?;
        Ok(TrainOutput { q, behaviour, balance: routing.balance_loss(self.device())? })
    }

    /// Like `forward` on observations already through the encoders.
    pub fn forward_encoded(&self, obs: &EncodedObservation, bins: &Tensor) -> Result<Tensor> {
        self.q_logits(&self.decode_states(&self.prefix(obs)?, obs.text_valid.as_ref(), bins)?.0, 0)
    }

    /// Runs the instruction and frame encoders over a batch.
    pub fn encode(&self, obs: &ObservationBatch) -> Result<EncodedObservation> {
        let text = self.encode_text(&obs.text, obs.text_valid.as_ref())?;
        let (b, h, c, s, _) = obs.frames.dims5()?;
        let frames = self.vision_batch(&obs.frames.reshape((b * h, c, s, s))?, &text, h)?;
        Ok(EncodedObservation { text_tokens: text.tokens, text_valid: text.valid, frames })
    }

    /// The observation tokens of an encoded batch: text, then frames oldest to newest, each with
    /// its slot's position (as `observation` builds them for one sample).
    fn prefix(&self, obs: &EncodedObservation) -> Result<Tensor> {
        let (b, h, t, d) = obs.frames.dims4()?;
        let positions = self.frame_positions.narrow(0, 0, h.min(self.cfg.frame_position_slots()))?;
        let frames = obs.frames.broadcast_add(&positions)?.reshape((b, h * t, d))?;
        Tensor::cat(&[&obs.text_tokens, &frames], 1)
    }

    /// Encodes `B * h` frames at once with each sample's conditioning repeated `h` times.
    fn vision_batch(&self, images: &Tensor, text: &TextEncoding, h: usize) -> Result<Tensor> {
        let (b, d) = text.pooled.dims2()?;
        let cond = text.pooled.unsqueeze(1)?.repeat((1, h, 1))?.reshape((b * h, d))?;
        let tokens = self.vision.forward(images, &cond)?;
        let (_, t, d) = tokens.dims3()?;
        tokens.reshape((b, h, t, d))
    }

    /// The decoder's last states [B, m + 1, D] at the positions the Q values of dimensions 0..=m
    /// are read from, and every layer's routing statistics. `bins`: [B, m] u32.
    fn decode_states(&self, prefix: &Tensor, text_valid: Option<&Tensor>, bins: &Tensor) -> Result<(Tensor, DecoderRouting)> {
        let actions = match bins.dim(1)? {
            0 => None,
            _ => Some(self.action_tokens(bins, 0)?),
        };
        self.decoder.forward(prefix, text_valid, actions.as_ref())
    }
}

/// Rows of the bin-embedding table: one set of bins, or one per dimension.
fn bin_embeddings(cfg: &VlaConfig) -> usize {
    match cfg.action_head {
        ActionHeadKind::Shared => cfg.actions.bins,
        ActionHeadKind::PerDimension => cfg.action_dims() * cfg.actions.bins,
    }
}
