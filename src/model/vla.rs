//! The VLA Q-network: instruction and frame encoders, a MoE decoder over observation and action
//! tokens, and a per-dimension Q head.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::{embedding, Embedding, Linear, VarBuilder};

use super::config::{ActionHeadKind, VlaConfig};
use super::layers::{norm, Attention, Norm};
use super::moe::{empty_load, ExpertLoad, FeedForward};
use super::text::{key_padding_bias, TextEncoder, TextEncoding, TextInput};
use super::vision::VisionEncoder;

#[derive(Debug, Clone)]
struct DecoderBlock {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    ffn: FeedForward,
}

impl DecoderBlock {
    fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            norm1: norm(d, cfg.norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(d, cfg.heads, vb.pp("attn"))?,
            norm2: norm(d, cfg.norm_eps, vb.pp("norm2"))?,
            ffn: FeedForward::new(d, &cfg.ffn, vb.pp("ffn"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        bias: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        load: Option<&mut [u32]>,
        balance: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(&self.norm1.forward(xs)?, bias, cache)?)?;
        &xs + self.ffn.forward(&self.norm2.forward(&xs)?, load, balance)?
    }
}

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

/// Key-value caches of every decoder layer for one control step.
pub struct DecoderCache {
    layers: Vec<KvCache>,
}

impl DecoderCache {
    pub fn new(layers: usize, max_len: usize) -> Self {
        Self { layers: (0..layers).map(|_| KvCache::new(2, max_len)).collect() }
    }
}

/// Q logit of every bin before any data: sigmoid(-4) = 0.018. A pessimistic start keeps the
/// bootstrapped max over bins near 0 until data raises it; an optimistic one (candle's default init
/// puts the max of 256 sigmoids near 0.98) would make every target a constant near 1. The head's
/// weights start small (not zero) so that gradients reach the decoder from the first update and an
/// untrained model's choices still depend on its input.
pub const INITIAL_Q_LOGIT: f64 = -4.0;
const INITIAL_Q_WEIGHT_STD: f64 = 0.01;

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
            Self::Shared(linear) => linear.forward(hidden),
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
    /// [history, tokens_per_frame, D]: where in the history window a frame token sits.
    frame_positions: Tensor,
    bin_embedding: Embedding,
    /// [dims, D]: which action dimension a token carries.
    dim_embedding: Tensor,
    blocks: Vec<DecoderBlock>,
    norm: Norm,
    head: QHead,
}

impl VlaModel {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let small = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let blocks = (0..cfg.layers).map(|i| DecoderBlock::new(cfg, vb.pp(format!("decoder.{i}")))).collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            text: TextEncoder::new(cfg, vb.pp("text"))?,
            vision: VisionEncoder::new(cfg, vb.pp("vision"))?,
            frame_positions: vb.get_with_hints((cfg.history, cfg.tokens_per_frame, d), "frame_positions", small)?,
            bin_embedding: embedding(bin_embeddings(cfg), d, vb.pp("bin_embedding"))?,
            dim_embedding: vb.get_with_hints((cfg.action_dims(), d), "dim_embedding", small)?,
            blocks,
            norm: norm(d, cfg.norm_eps, vb.pp("norm"))?,
            head: QHead::new(cfg, vb.pp("q_head"))?,
        })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.cfg
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
            parts.push(f.broadcast_add(&self.frame_positions.i(slot)?)?);
        }
        Tensor::cat(&parts, 1)
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
    /// -> [B, T, bins].
    fn q_logits(&self, hidden: &Tensor, first: usize) -> Result<Tensor> {
        self.head.forward(&self.norm.forward(hidden)?, first)
    }

    /// The reference (training) forward pass. `bins`: [B, m] u32, the chosen bins of dimensions
    /// 0..m with m < dims. Returns Q logits [B, m + 1, bins]: row i belongs to dimension i and is
    /// read at the position before that dimension's token (the last observation token for i = 0).
    pub fn forward(&self, obs: &ObservationBatch, bins: &Tensor, load: Option<&mut ExpertLoad>) -> Result<Tensor> {
        self.forward_probed(obs, bins, load, None)
    }

    /// The training forward pass: like `forward` on observations already through the encoders,
    /// plus the mean load-balancing loss over the decoder's mixture layers (a scalar; zero for a
    /// dense decoder).
    pub fn forward_train(&self, obs: &EncodedObservation, bins: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut balance = Vec::with_capacity(self.cfg.layers);
        let logits = self.decoder(&self.prefix(obs)?, obs.text_valid.as_ref(), bins, None, Some(&mut balance))?;
        let balance = match balance.len() {
            0 => Tensor::zeros((), candle_core::DType::F32, self.device())?,
            n => (Tensor::stack(&balance, 0)?.sum_all()? / n as f64)?,
        };
        Ok((logits, balance))
    }

    /// Like `forward` on observations already through the encoders.
    pub fn forward_encoded(&self, obs: &EncodedObservation, bins: &Tensor) -> Result<Tensor> {
        self.decoder(&self.prefix(obs)?, obs.text_valid.as_ref(), bins, None, None)
    }

    fn forward_probed(
        &self,
        obs: &ObservationBatch,
        bins: &Tensor,
        load: Option<&mut ExpertLoad>,
        balance: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let encoded = self.encode(obs)?;
        self.decoder(&self.prefix(&encoded)?, encoded.text_valid.as_ref(), bins, load, balance)
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
        let frames = obs.frames.broadcast_add(&self.frame_positions.narrow(0, 0, h)?)?.reshape((b, h * t, d))?;
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

    /// Decoder over `prefix` (observation tokens) followed by the action tokens of `bins`.
    pub fn forward_tokens(
        &self,
        prefix: &Tensor,
        text_valid: Option<&Tensor>,
        bins: &Tensor,
        load: Option<&mut ExpertLoad>,
    ) -> Result<Tensor> {
        self.decoder(prefix, text_valid, bins, load, None)
    }

    fn decoder(
        &self,
        prefix: &Tensor,
        text_valid: Option<&Tensor>,
        bins: &Tensor,
        mut load: Option<&mut ExpertLoad>,
        mut balance: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let (b, p, _) = prefix.dims3()?;
        let (_, m) = bins.dims2()?;
        let xs = if m > 0 { Tensor::cat(&[prefix, &self.action_tokens(bins, 0)?], 1)? } else { prefix.clone() };
        let bias = attention_bias(b, p, m, text_valid, xs.device())?;
        let mut xs = xs;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_load = load.as_deref_mut().map(|l| l.counts[i].as_mut_slice());
            xs = block.forward(&xs, Some(&bias), None, layer_load, balance.as_deref_mut())?;
        }
        self.q_logits(&xs.narrow(1, p - 1, m + 1)?, 0)
    }

    /// Runs the observation prefix into fresh caches and returns the Q logits of dimension 0,
    /// [B, bins]. The prefix is bidirectional and unpadded (batch-1 inference).
    pub fn prefill(&self, prefix: &Tensor, cache: &mut DecoderCache, load: &mut ExpertLoad) -> Result<Tensor> {
        let mut xs = prefix.clone();
        for ((block, kv), counts) in self.blocks.iter().zip(cache.layers.iter_mut()).zip(load.counts.iter_mut()) {
            xs = block.forward(&xs, None, Some(kv), Some(counts), None)?;
        }
        let p = xs.dim(1)?;
        self.q_logits(&xs.narrow(1, p - 1, 1)?, 0)?.squeeze(1)
    }

    /// One cached step: the token of dimension `dim` with bins `bins` ([B] u32) goes in, the Q
    /// logits of dimension `dim + 1` ([B, bins]) come out.
    pub fn step(&self, bins: &Tensor, dim: usize, cache: &mut DecoderCache, load: &mut ExpertLoad) -> Result<Tensor> {
        let mut xs = self.action_tokens(&bins.unsqueeze(1)?, dim)?;
        for ((block, kv), counts) in self.blocks.iter().zip(cache.layers.iter_mut()).zip(load.counts.iter_mut()) {
            xs = block.forward(&xs, None, Some(kv), Some(counts), None)?;
        }
        self.q_logits(&xs, dim + 1)?.squeeze(1)
    }
}

/// Rows of the bin-embedding table: one set of bins, or one per dimension.
fn bin_embeddings(cfg: &VlaConfig) -> usize {
    match cfg.action_head {
        ActionHeadKind::Shared => cfg.actions.bins,
        ActionHeadKind::PerDimension => cfg.action_dims() * cfg.actions.bins,
    }
}

/// Additive bias [B or 1, 1, T, T] with T = p + m. Observation queries see every (valid)
/// observation key; the action token at position p + j also sees action tokens 0..=j.
fn attention_bias(b: usize, p: usize, m: usize, text_valid: Option<&Tensor>, device: &Device) -> Result<Tensor> {
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
        Some(valid) => {
            // Every key after the instruction is a real token.
            let l = valid.dim(1)?;
            let keys = Tensor::cat(&[valid.clone(), Tensor::ones((b, t - l), DType::F32, device)?], 1)?;
            causal.broadcast_add(&key_padding_bias(&keys)?)
        }
    }
}
