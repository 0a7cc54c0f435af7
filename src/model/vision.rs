//! Frame encoders: FiLM-conditioned convolutions or patch embedding, then TokenLearner.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, Conv2dConfig, Linear, VarBuilder};

use super::config::{VisionKind, VlaConfig};
use super::kernels::conv::Conv;
use super::layers::{linear_rows, norm, Norm};

/// Feature-wise linear modulation: `x * (1 + gamma(e)) + beta(e)` per channel.
#[derive(Debug, Clone)]
struct Film {
    proj: Linear,
    channels: usize,
}

impl Film {
    fn new(cond: usize, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { proj: linear(cond, 2 * channels, vb)?, channels })
    }

    /// `(1 + gamma, beta)`, each [B, C].
    fn scale_shift(&self, cond: &Tensor) -> Result<(Tensor, Tensor)> {
        let gb = self.proj.forward(cond)?;
        let gamma = (gb.narrow(1, 0, self.channels)? + 1.0)?;
        Ok((gamma, gb.narrow(1, self.channels, self.channels)?))
    }

    /// `xs`: [B, C, H, W].
    fn forward_map(&self, xs: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let (g, b) = self.scale_shift(cond)?;
        xs.broadcast_mul(&g.unsqueeze(2)?.unsqueeze(3)?)?.broadcast_add(&b.unsqueeze(2)?.unsqueeze(3)?)
    }

    /// `xs`: [B, P, C].
    fn forward_tokens(&self, xs: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let (g, b) = self.scale_shift(cond)?;
        xs.broadcast_mul(&g.unsqueeze(1)?)?.broadcast_add(&b.unsqueeze(1)?)
    }
}

/// TokenLearner (as in RT-1): `tokens` learned spatial softmax maps pool [B, P, D] into [B, S, D].
#[derive(Debug, Clone)]
pub struct TokenLearner {
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

impl TokenLearner {
    pub fn new(d: usize, hidden: usize, tokens: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: norm(d, eps, vb.pp("norm"))?,
            fc1: linear(d, hidden, vb.pp("fc1"))?,
            fc2: linear(hidden, tokens, vb.pp("fc2"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = linear_rows(&self.fc1, &self.norm.forward(xs)?)?.relu()?;
        let maps = linear_rows(&self.fc2, &hidden)?; // [B, P, S]
        let maps = candle_nn::ops::softmax(&maps.transpose(1, 2)?, D::Minus1)?; // [B, S, P]
        maps.matmul(xs) // [B, S, D]
    }
}

#[derive(Debug, Clone)]
struct FilmConvBlock {
    conv: Conv,
    film: Film,
}

#[derive(Debug, Clone)]
enum Backbone {
    FilmConv { blocks: Vec<FilmConvBlock>, proj: Conv },
    Patch { embed: Conv, pos: Tensor, film: Film },
}

/// Image [B, 3, H, W] plus the instruction's pooled vector [B, D] -> [B, tokens_per_frame, D].
#[derive(Debug, Clone)]
pub struct VisionEncoder {
    backbone: Backbone,
    token_learner: TokenLearner,
}

impl VisionEncoder {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let v = &cfg.vision;
        let backbone = match v.kind {
            VisionKind::FilmConv => {
                let stride2 = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
                let mut blocks = Vec::with_capacity(v.channels.len());
                let mut c_in = 3;
                for (i, &c) in v.channels.iter().enumerate() {
                    let vb = vb.pp(format!("blocks.{i}"));
                    blocks.push(FilmConvBlock {
                        conv: Conv::new(c_in, c, 3, stride2, vb.pp("conv"))?,
                        film: Film::new(d, c, vb.pp("film"))?,
                    });
                    c_in = c;
                }
                let proj = Conv::new(c_in, d, 1, Default::default(), vb.pp("proj"))?;
                Backbone::FilmConv { blocks, proj }
            }
            VisionKind::Patch => {
                let p = v.patch_size;
                let patches = (cfg.image_size / p).pow(2);
                let cfg_p = Conv2dConfig { stride: p, ..Default::default() };
                Backbone::Patch {
                    embed: Conv::new(3, d, p, cfg_p, vb.pp("patch_embed"))?,
                    pos: vb.get_with_hints((patches, d), "pos", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
                    film: Film::new(d, d, vb.pp("film"))?,
                }
            }
        };
        let token_learner =
            TokenLearner::new(d, v.token_learner_hidden, cfg.tokens_per_frame, cfg.norm_eps, vb.pp("token_learner"))?;
        Ok(Self { backbone, token_learner })
    }

    pub fn forward(&self, images: &Tensor, cond: &Tensor) -> Result<Tensor> {
        let features = match &self.backbone {
            Backbone::FilmConv { blocks, proj } => {
                let mut xs = images.clone();
                for block in blocks {
                    xs = block.film.forward_map(&block.conv.forward(&xs)?, cond)?.relu()?;
                }
                proj.forward(&xs)?.flatten_from(2)?.transpose(1, 2)? // [B, P, D]
            }
            Backbone::Patch { embed, pos, film } => {
                let xs = embed.forward(images)?.flatten_from(2)?.transpose(1, 2)?.broadcast_add(pos)?;
                film.forward_tokens(&xs, cond)?.relu()?
            }
        };
        self.token_learner.forward(&features.contiguous()?)
    }
}
