//! CPU kernels with a cheap backward pass for training: layer norm, softmax over the last dimension
//! and the experts' gates, each one pass forward and one pass back.
//!
//! candle's fused CPU kernels for the first two have no backward, so while a gradient can flow they
//! were built from generic ops (layer norm from nine, softmax from five, a gate from two), and each
//! such op costs a pass forward, a pass back, and a zero-filled gradient buffer that the pass back
//! is added into. Inference keeps candle's layer norm and softmax; the gate serves it too, computing
//! what candle's ops did to the bit. Devices and dtypes these kernels do not cover take the generic
//! forms.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use crate::model::config::ExpertAct;

/// The f32 values of a contiguous CPU tensor.
pub(super) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op} takes f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op} takes a contiguous tensor"),
    }
}

/// Whether the kernels here serve `xs`.
fn covered(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

fn last_dim(layout: &Layout) -> Result<usize> {
    match layout.shape().dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("expected a non-empty last dimension, got {:?}", layout.shape()),
    }
}

/// Layer norm over the last dimension, `(x - mean) / sqrt(var + eps) * weight + bias`, with a
/// gradient for all of them.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    match bias {
        Some(bias) if covered(xs) => {
            xs.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps: eps as f32 })
        }
        _ => {
            let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(weight)?;
            match bias {
                Some(bias) => normed.broadcast_add(bias),
                None => Ok(normed),
            }
        }
    }
}

/// A row's mean and reciprocal standard deviation.
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(xs_layout)?;
        let xs = contiguous_f32(xs, xs_layout, self.name())?;
        let weight = contiguous_f32(weight, weight_layout, self.name())?;
        let bias = contiguous_f32(bias, bias_layout, self.name())?;
        if weight.len() != d || bias.len() != d {
            candle_core::bail!("layer norm over {d} values needs {d} weights and biases");
        }
        let mut ys = vec![0f32; xs.len()];
        for (x, y) in xs.chunks(d).zip(ys.chunks_mut(d)) {
            let (mean, rstd) = moments(x, self.eps);
            for i in 0..d {
                y[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
            }
        }
        Ok((CpuStorage::F32(ys), xs_layout.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = xs.dim(D::Minus1)?;
        let rows = xs.elem_count() / d;
        // [rows + 2, d]: the input's gradient, then the weight's, then the bias's.
        let packed = xs.apply_op3_no_bwd(weight, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let grad_xs = packed.narrow(0, 0, rows)?.reshape(xs.shape())?;
        Ok((Some(grad_xs), Some(packed.get(rows)?), Some(packed.get(rows + 1)?)))
    }
}

/// The gradients of [`LayerNorm`], packed as `[rows + 2, d]`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xs_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(xs_layout)?;
        let xs = contiguous_f32(xs, xs_layout, self.name())?;
        let weight = contiguous_f32(weight, weight_layout, self.name())?;
        let grad = contiguous_f32(grad, grad_layout, self.name())?;
        let rows = xs.len() / d;
        let mut out = vec![0f32; (rows + 2) * d];
        let (grad_xs, params) = out.split_at_mut(rows * d);
        let (grad_weight, grad_bias) = params.split_at_mut(d);
        let mut normed = vec![0f32; d];
        for ((x, g), gx) in xs.chunks(d).zip(grad.chunks(d)).zip(grad_xs.chunks_mut(d)) {
            let (mean, rstd) = moments(x, self.eps);
            let (mut mean_gn, mut mean_gn_normed) = (0f32, 0f32);
            for i in 0..d {
                normed[i] = (x[i] - mean) * rstd;
                let gn = g[i] * weight[i];
                mean_gn += gn;
                mean_gn_normed += gn * normed[i];
                grad_weight[i] += g[i] * normed[i];
                grad_bias[i] += g[i];
            }
            mean_gn /= d as f32;
            mean_gn_normed /= d as f32;
            for i in 0..d {
                gx[i] = rstd * (g[i] * weight[i] - mean_gn - normed[i] * mean_gn_normed);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// Softmax over the last dimension, with a gradient.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if !covered(xs) {
        return candle_nn::ops::softmax(xs, D::Minus1);
    }
    xs.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl candle_core::CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(layout)?;
        let xs = contiguous_f32(storage, layout, self.name())?;
        let mut ys = vec![0f32; xs.len()];
        for (x, y) in xs.chunks(d).zip(ys.chunks_mut(d)) {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (y, x) in y.iter_mut().zip(x) {
                *y = (x - max).exp();
                sum += *y;
            }
            y.iter_mut().for_each(|y| *y /= sum);
        }
        Ok((CpuStorage::F32(ys), layout.shape().clone()))
    }

    fn bwd(&self, _xs: &Tensor, probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

/// `probs * (grad - sum(grad * probs))` per row: the gradient of [`Softmax`].
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        probs: &CpuStorage,
        probs_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = last_dim(probs_layout)?;
        let probs = contiguous_f32(probs, probs_layout, self.name())?;
        let grad = contiguous_f32(grad, grad_layout, self.name())?;
        let mut out = vec![0f32; probs.len()];
        for ((p, g), o) in probs.chunks(d).zip(grad.chunks(d)).zip(out.chunks_mut(d)) {
            let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
            for i in 0..d {
                o[i] = p[i] * (g[i] - dot);
            }
        }
        Ok((CpuStorage::F32(out), probs_layout.shape().clone()))
    }
}

/// An expert's gate on its two up projections: GeRM's `silu(u1 * u3)` or SwiGLU's
/// `silu(u1) * u3`, with a gradient for both. One pass instead of two at inference too, with the
/// same values.
pub fn gate(u1: &Tensor, u3: &Tensor, act: ExpertAct) -> Result<Tensor> {
    if !covered(u1) || u1.shape() != u3.shape() {
        return match act {
            ExpertAct::Germ => (u1 * u3)?.silu(),
            ExpertAct::Swiglu => u1.silu()? * u3,
        };
    }
    u1.contiguous()?.apply_op2(&u3.contiguous()?, Gate { act })
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

struct Gate {
    act: ExpertAct,
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn cpu_fwd(&self, u1: &CpuStorage, l1: &Layout, u3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let u1 = contiguous_f32(u1, l1, self.name())?;
        let u3 = contiguous_f32(u3, l3, self.name())?;
        // candle's own silu, `v / (1 + exp(-v))`, so inference computes what it did before.
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let ys = match self.act {
            ExpertAct::Germ => u1.iter().zip(u3).map(|(a, b)| silu(a * b)).collect(),
            ExpertAct::Swiglu => u1.iter().zip(u3).map(|(a, b)| silu(*a) * b).collect(),
        };
        Ok((CpuStorage::F32(ys), l1.shape().clone()))
    }

    fn bwd(&self, u1: &Tensor, u3: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // [2, ...]: the gradient of u1, then of u3.
        let packed = u1.apply_op3_no_bwd(u3, &grad.contiguous()?, &GateGrad { act: self.act })?;
        Ok((Some(packed.get(0)?), Some(packed.get(1)?)))
    }
}

/// The gradients of [`Gate`], packed as `[2, ...]`.
struct GateGrad {
    act: ExpertAct,
}

impl CustomOp3 for GateGrad {
    fn name(&self) -> &'static str {
        "gate-grad"
    }

    fn cpu_fwd(
        &self,
        u1: &CpuStorage,
        l1: &Layout,
        u3: &CpuStorage,
        l3: &Layout,
        grad: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let u1 = contiguous_f32(u1, l1, self.name())?;
        let u3 = contiguous_f32(u3, l3, self.name())?;
        let grad = contiguous_f32(grad, lg, self.name())?;
        let n = u1.len();
        let mut out = vec![0f32; 2 * n];
        let (g1, g3) = out.split_at_mut(n);
        for i in 0..n {
            let (a, b, g) = (u1[i], u3[i], grad[i]);
            match self.act {
                ExpertAct::Germ => {
                    // d silu(p) / dp = s * (1 + p * (1 - s)), p = a * b.
                    let p = a * b;
                    let s = sigmoid(p);
                    let dp = g * s * (1.0 + p * (1.0 - s));
                    g1[i] = dp * b;
                    g3[i] = dp * a;
                }
                ExpertAct::Swiglu => {
                    let s = sigmoid(a);
                    g1[i] = g * b * s * (1.0 + a * (1.0 - s));
                    g3[i] = g * a * s;
                }
            }
        }
        let mut dims = vec![2];
        dims.extend_from_slice(l1.shape().dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    fn max_abs(a: &Tensor) -> f32 {
        a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Values and gradients of `ours` and `generic` on the same inputs agree within `tol`, relative
    /// to the largest value.
    fn same_function(
        inputs: &[Var],
        ours: impl Fn(&[Tensor]) -> Result<Tensor>,
        generic: impl Fn(&[Tensor]) -> Result<Tensor>,
        tol: f32,
    ) -> Result<()> {
        let xs: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&xs)?, generic(&xs)?);
        assert_eq!(a.shape(), b.shape());
        assert!(max_diff(&a, &b) < tol * (1.0 + max_abs(&b)), "values differ by {}", max_diff(&a, &b));
        let probe = Tensor::randn(0f32, 1.0, a.shape(), a.device())?;
        let (ga, gb) = ((a * &probe)?.sum_all()?.backward()?, (b * &probe)?.sum_all()?.backward()?);
        for (i, x) in xs.iter().enumerate() {
            let (ga, gb) = (ga.get(x).expect("gradient"), gb.get(x).expect("gradient"));
            assert_eq!(ga.shape(), gb.shape());
            assert!(max_diff(ga, gb) < tol * (1.0 + max_abs(gb)), "the gradient of input {i} differs by {}", max_diff(ga, gb));
        }
        Ok(())
    }

    fn randn(shape: &[usize], scale: f32) -> Var {
        Var::randn(0f32, scale, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn layer_norm_matches_the_generic_form_in_values_and_gradients() -> Result<()> {
        for shape in [&[7, 5][..], &[2, 3, 16], &[1, 128]] {
            let d = *shape.last().unwrap();
            let inputs = [randn(shape, 3.0), randn(&[d], 1.0), randn(&[d], 1.0)];
            let generic = |t: &[Tensor]| {
                let centred = t[0].broadcast_sub(&t[0].mean_keepdim(D::Minus1)?)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                centred.broadcast_div(&(var + 1e-5)?.sqrt()?)?.broadcast_mul(&t[1])?.broadcast_add(&t[2])
            };
            same_function(&inputs, |t| layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5), generic, 1e-4)?;
        }
        Ok(())
    }

    #[test]
    fn softmax_matches_the_generic_form_in_values_and_gradients() -> Result<()> {
        let inputs = [randn(&[3, 4, 9], 4.0)];
        same_function(&inputs, |t| softmax_last_dim(&t[0]), |t| candle_nn::ops::softmax(&t[0], D::Minus1), 1e-5)?;
        // Masked keys, as attention's causal bias makes them, and a transposed (strided) input.
        let mask = Tensor::new(&[[0f32, f32::NEG_INFINITY, 0.0], [0.0, 0.0, f32::NEG_INFINITY]], &Device::Cpu)?;
        let masked = |t: &[Tensor]| t[0].t()?.broadcast_add(&mask);
        let inputs = [randn(&[3, 2], 2.0)];
        same_function(&inputs, |t| softmax_last_dim(&masked(t)?), |t| candle_nn::ops::softmax(&masked(t)?, D::Minus1), 1e-5)
    }

    #[test]
    fn gates_match_the_generic_forms_in_values_and_gradients() -> Result<()> {
        for act in [ExpertAct::Germ, ExpertAct::Swiglu] {
            // Large values reach the sigmoid's flat tails.
            let inputs = [randn(&[6, 11], 4.0), randn(&[6, 11], 4.0)];
            let generic = |t: &[Tensor]| match act {
                ExpertAct::Germ => (&t[0] * &t[1])?.silu(),
                ExpertAct::Swiglu => t[0].silu()? * &t[1],
            };
            same_function(&inputs, |t| gate(&t[0], &t[1], act), generic, 1e-3)?;
            // Inference computes what candle's ops did, to the bit.
            let plain: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().detach()).collect();
            assert_eq!(max_diff(&gate(&plain[0], &plain[1], act)?, &generic(&plain)?), 0.0);
        }
        Ok(())
    }
}
