//! Building blocks shared by the encoders and the decoder.

use std::sync::Arc;

use candle_core::{Module, Result, Tensor, D};
use candle_nn::kv_cache::KvCache;
use candle_nn::{layer_norm, linear, linear_no_bias, LayerNorm, Linear, VarBuilder};

use super::config::ExpertAct;
use super::kernels::bf16::{Bf16Matrix, MAX_ROWS};
use super::kernels::fused;

pub fn norm(d: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    Ok(Norm { inner: layer_norm(d, eps, vb)?, eps })
}

/// Layer norm that stays differentiable. candle's fused CPU kernel has no backward pass, so
/// whenever a gradient can flow (training) [`fused::layer_norm`] runs instead; inference keeps
/// candle's.
#[derive(Debug, Clone)]
pub struct Norm {
    inner: LayerNorm,
    eps: f64,
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() || self.inner.weight().track_op() {
            fused::layer_norm(xs, self.inner.weight(), self.inner.bias(), self.eps)
        } else {
            self.inner.forward(xs)
        }
    }
}

/// Softmax over the last dimension: candle's kernel for inference, [`fused::softmax_last_dim`]
/// (which has a backward pass) whenever a gradient can flow.
pub fn softmax_last(xs: &Tensor) -> Result<Tensor> {
    if xs.track_op() {
        fused::softmax_last_dim(xs)
    } else {
        candle_nn::ops::softmax_last_dim(xs)
    }
}

/// `linear.forward(xs)` as one matrix product over all leading dimensions. candle's `Linear`
/// broadcasts its weight over a 3-D input's batch instead, and the backward pass of that broadcast
/// makes one small weight gradient per batch row and then sums them.
pub fn linear_rows(linear: &Linear, xs: &Tensor) -> Result<Tensor> {
    if xs.rank() <= 2 {
        return linear.forward(xs);
    }
    let mut dims = xs.dims().to_vec();
    let width = dims.pop().expect("rank > 2");
    let ys = linear.forward(&xs.reshape((dims.iter().product::<usize>(), width))?)?;
    dims.push(ys.dim(1)?);
    ys.reshape(dims)
}

/// A linear layer whose weight batch-1 decoding may also hold in bf16 (`to_bf16`).
#[derive(Debug, Clone)]
pub struct Projection {
    linear: Linear,
    bf16: Option<Arc<Bf16Matrix>>,
}

impl From<Linear> for Projection {
    fn from(linear: Linear) -> Self {
        Self { linear, bf16: None }
    }
}

impl Projection {
    /// The projection with its weight rounded to bf16. Inputs of a few rows run the bf16 kernel;
    /// larger ones multiply by the same rounded values in f32, so every path computes one
    /// function.
    pub fn to_bf16(&self) -> Result<Self> {
        let half = Bf16Matrix::new(self.linear.weight())?;
        let rounded = half.to_f32(self.linear.weight().device())?;
        Ok(Self { linear: Linear::new(rounded, self.linear.bias().cloned()), bf16: Some(Arc::new(half)) })
    }
}

impl Projection {
    /// Whether `xs` is a small inference batch on the CPU, which the bf16 kernel serves.
    fn takes_bf16(xs: &Tensor) -> bool {
        let rows = xs.elem_count() / xs.dims().last().copied().unwrap_or(1).max(1);
        rows <= MAX_ROWS && xs.device().is_cpu() && !xs.track_op()
    }
}

impl Module for Projection {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.bf16 {
            Some(half) if Self::takes_bf16(xs) => {
                let ys = xs.contiguous()?.apply_op1_no_bwd(half.as_ref())?;
                match self.linear.bias() {
                    Some(bias) => ys.broadcast_add(bias),
                    None => Ok(ys),
                }
            }
            _ => linear_rows(&self.linear, xs),
        }
    }
}

/// Multi-head self-attention with a fused QKV projection.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Projection,
    out: Projection,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(d_model: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: linear(d_model, 3 * d_model, vb.pp("qkv"))?.into(),
            out: linear(d_model, d_model, vb.pp("out"))?.into(),
            heads,
            head_dim: d_model / heads,
        })
    }

    /// The layer with its projections' weights in bf16 (`Projection::to_bf16`).
    pub fn to_bf16(&self) -> Result<Self> {
        Ok(Self { qkv: self.qkv.to_bf16()?, out: self.out.to_bf16()?, ..self.clone() })
    }

    /// `xs`: [B, T, D]. `bias`: additive attention bias broadcastable to [B, H, T, S], where S is
    /// T plus the cached length. With a cache, the new keys and values are appended to it and the
    /// queries attend to everything cached so far.
    pub fn forward(&self, xs: &Tensor, bias: Option<&Tensor>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (q, k, v) = self.project(xs)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        self.attend(&q, &k, &v, bias)
    }

    /// Queries, keys and values of `xs` ([B, T, D]), each [B, H, T, head_dim].
    pub fn project(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = xs.dims3()?;
        let qkv = self.qkv.forward(xs)?.reshape((b, t, 3, self.heads, self.head_dim))?;
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        Ok((part(0)?, part(1)?, part(2)?))
    }

    /// Attention of queries [B, H, T, hd] over keys and values [B, H, S, hd], projected back to
    /// [B, T, D].
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?; // [B, H, T, S]
        let scores = match bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        let probs = softmax_last(&scores)?;
        let ctx = probs.matmul(v)?; // [B, H, T, hd]
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?;
        self.out.forward(&ctx)
    }
}

/// A gated feed-forward: the dense layer, and one expert of a mixture.
#[derive(Debug, Clone)]
pub struct GatedFfn {
    w1: Projection,
    w3: Projection,
    w2: Projection,
    act: ExpertAct,
    /// bf16 decoding: `[w1; w3]` as one matrix, so a step streams both in one pass.
    w13: Option<Arc<Bf16Matrix>>,
}

impl GatedFfn {
    pub fn new(d_model: usize, hidden: usize, act: ExpertAct, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            w1: linear_no_bias(d_model, hidden, vb.pp("w1"))?.into(),
            w3: linear_no_bias(d_model, hidden, vb.pp("w3"))?.into(),
            w2: linear_no_bias(hidden, d_model, vb.pp("w2"))?.into(),
            act,
            w13: None,
        })
    }

    /// The feed-forward with its weights in bf16 (`Projection::to_bf16`).
    pub fn to_bf16(&self) -> Result<Self> {
        let w13 = Tensor::cat(&[self.w1.linear.weight(), self.w3.linear.weight()], 0)?;
        Ok(Self {
            w1: self.w1.to_bf16()?,
            w3: self.w3.to_bf16()?,
            w2: self.w2.to_bf16()?,
            act: self.act,
            w13: Some(Arc::new(Bf16Matrix::new(&w13)?)),
        })
    }

    /// The up projections `(w1 x, w3 x)`, before gating.
    pub fn up(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.w13 {
            Some(w13) if Projection::takes_bf16(xs) => {
                let both = xs.contiguous()?.apply_op1_no_bwd(w13.as_ref())?;
                let hidden = both.dim(D::Minus1)? / 2;
                Ok((both.narrow(D::Minus1, 0, hidden)?, both.narrow(D::Minus1, hidden, hidden)?))
            }
            _ => Ok((self.w1.forward(xs)?, self.w3.forward(xs)?)),
        }
    }

    pub fn down(&self, hidden: &Tensor) -> Result<Tensor> {
        self.w2.forward(hidden)
    }
}

impl Module for GatedFfn {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (u1, u3) = self.up(xs)?;
        self.down(&gate(&u1, &u3, self.act)?)
    }
}

/// Combines the two up projections according to the expert's form: GeRM's `silu(u1 * u3)` or
/// SwiGLU's `silu(u1) * u3`.
pub fn gate(u1: &Tensor, u3: &Tensor, act: ExpertAct) -> Result<Tensor> {
    fused::gate(u1, u3, act)
}

/// Mean over the positions where `valid` is 1. `xs`: [B, T, D], `valid`: [B, T] (f32 0/1).
pub fn masked_mean(xs: &Tensor, valid: &Tensor) -> Result<Tensor> {
    let w = valid.unsqueeze(D::Minus1)?; // [B, T, 1]
    let sum = xs.broadcast_mul(&w)?.sum(1)?;
    let count = w.sum(1)?.clamp(1.0, f64::INFINITY)?;
    sum.broadcast_div(&count)
}
