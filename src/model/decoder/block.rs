//! One decoder layer, shared by both decoders.

use candle_core::{Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::VarBuilder;

use crate::model::config::VlaConfig;
use crate::model::layers::{norm, Attention, Norm};
use crate::model::moe::{FeedForward, LayerRouting};

/// Pre-norm attention and a (mixture-of-experts) feed-forward, each with a residual.
#[derive(Debug, Clone)]
pub struct DecoderBlock {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    ffn: FeedForward,
}

impl DecoderBlock {
    pub fn new(cfg: &VlaConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            norm1: norm(d, cfg.norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(d, cfg.heads, vb.pp("attn"))?,
            norm2: norm(d, cfg.norm_eps, vb.pp("norm2"))?,
            ffn: FeedForward::new(d, &cfg.ffn, vb.pp("ffn"))?,
        })
    }

    /// `xs` [B, T, D] -> [B, T, D], attending to its own keys after those `cache` holds (if any).
    pub fn forward(&self, xs: &Tensor, bias: Option<&Tensor>, cache: Option<&mut KvCache>) -> Result<(Tensor, LayerRouting)> {
        self.forward_over(xs, bias, |k, v| match cache {
            Some(cache) => cache.append(k, v),
            None => Ok((k.clone(), v.clone())),
        })
    }

    /// The block with the keys and values its queries attend to made by `keys` from those of
    /// `xs` ([B, H, T, hd] each): a cache appends them, the streaming decoder places them among
    /// the stored ones of the instruction and older frames.
    pub fn forward_over(
        &self,
        xs: &Tensor,
        bias: Option<&Tensor>,
        keys: impl FnOnce(&Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, LayerRouting)> {
        let (q, k, v) = self.attn.project(&self.norm1.forward(xs)?)?;
        let (k, v) = keys(&k, &v)?;
        let xs = (xs + self.attn.attend(&q, &k, &v, bias)?)?;
        let (ys, routing) = self.ffn.forward(&self.norm2.forward(&xs)?)?;
        Ok(((&xs + ys)?, routing))
    }

    pub fn to_bf16(&self) -> Result<Self> {
        Ok(Self { attn: self.attn.to_bf16()?, ffn: self.ffn.to_bf16()?, ..self.clone() })
    }
}
