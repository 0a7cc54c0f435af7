//! A 2-D convolution whose backward pass is cheap on the CPU.
//!
//! candle's CPU backward of `conv2d` runs a direct `conv_transpose2d` loop for the input gradient
//! and a batch-sized kernel convolution for the weight gradient; for the frame encoder during
//! training that is most of an end-to-end update. This layer instead unfolds the input into patch
//! columns (`im2col`, whose backward folds them back) and multiplies by the kernel, so the backward
//! pass is two matrix products and one scatter-add. The forward pass is that way too: on the frame
//! encoder's sizes it takes half the time of candle's CPU kernel, which matters for the target
//! network's passes in training. Devices and dtypes the unfold does not cover keep candle's kernel.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use super::fused::contiguous_f32;

/// `conv2d` with square kernels, no dilation and no groups.
#[derive(Debug, Clone)]
pub struct Conv {
    inner: Conv2d,
}

impl Conv {
    pub fn new(c_in: usize, c_out: usize, kernel: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.dilation != 1 || cfg.groups != 1 {
            candle_core::bail!("Conv supports neither dilation nor groups");
        }
        Ok(Self { inner: conv2d(c_in, c_out, kernel, cfg, vb)? })
    }

    /// `xs`: [B, C, H, W] -> [B, C_out, H_out, W_out].
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let weight = self.inner.weight();
        if !(xs.device().is_cpu() && xs.dtype() == DType::F32) {
            return self.inner.forward(xs);
        }
        let cfg = self.inner.config();
        let (b, c, h, w) = xs.dims4()?;
        let (c_out, _, k, _) = weight.dims4()?;
        if h.min(w) + 2 * cfg.padding < k {
            candle_core::bail!("a {h}x{w} input is smaller than the {k}x{k} kernel");
        }
        let unfold = Im2Col { kernel: k, stride: cfg.stride, padding: cfg.padding, height: h, width: w };
        let (out_h, out_w) = unfold.out_size();
        let columns = xs.contiguous()?.apply_op1(unfold)?; // [C*k*k, B*H_out*W_out]
        let kernel = weight.reshape((c_out, c * k * k))?;
        let ys = kernel.matmul(&columns)?; // [C_out, B*H_out*W_out]
        let ys = match self.inner.bias() {
            Some(bias) => ys.broadcast_add(&bias.reshape((c_out, 1))?)?,
            None => ys,
        };
        ys.reshape((c_out, b, out_h * out_w))?.transpose(0, 1)?.contiguous()?.reshape((b, c_out, out_h, out_w))
    }
}

/// [B, C, H, W] -> [C*k*k, B*H_out*W_out]: row `(c*k + ky)*k + kx` (the order of a
/// `[C_out, C, k, k]` kernel flattened to `[C_out, C*k*k]`) holds, for every output position of
/// every image, the input pixel under kernel tap `(ky, kx)`, zero in the padding. One matrix
/// product with the whole batch then makes the output, and one more the kernel's gradient.
#[derive(Debug, Clone, Copy)]
struct Im2Col {
    kernel: usize,
    stride: usize,
    padding: usize,
    height: usize,
    width: usize,
}

impl Im2Col {
    fn out_size(&self) -> (usize, usize) {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (out(self.height), out(self.width))
    }

    /// Calls `f(output_position, input_pixel)`, both within one image, for every output position
    /// whose tap `row` (see the type) falls inside the image.
    fn for_each_tap(&self, row: usize, mut f: impl FnMut(usize, usize)) {
        let (out_h, out_w) = self.out_size();
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (c, ky, kx) = (row / (k * k), row / k % k, row % k);
        for oy in 0..out_h {
            let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < self.height) else { continue };
            let input_row = (c * self.height + iy) * self.width;
            for ox in 0..out_w {
                let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&ix| ix < self.width) else { continue };
                f(oy * out_w + ox, input_row + ix);
            }
        }
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let (b, c, _, _) = layout.shape().dims4()?;
        let (out_h, out_w) = self.out_size();
        let positions = out_h * out_w;
        let image = c * self.height * self.width;
        let rows = c * self.kernel * self.kernel;
        let mut columns = vec![0f32; rows * b * positions];
        columns.par_chunks_mut(b * positions).enumerate().for_each(|(row, dst)| {
            for (dst, img) in dst.chunks_mut(positions).zip(input.chunks(image)) {
                self.for_each_tap(row, |pos, pixel| dst[pos] = img[pixel]);
            }
        });
        Ok((CpuStorage::F32(columns), Shape::from((rows, b * positions))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, channels, _, _) = arg.dims4()?;
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im { unfold: *self, batch: b, channels })?))
    }
}

/// The adjoint of [`Im2Col`]: sums every column entry back onto the pixel it was copied from.
struct Col2Im {
    unfold: Im2Col,
    batch: usize,
    channels: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let columns = contiguous_f32(storage, layout, self.name())?;
        let u = &self.unfold;
        let (out_h, out_w) = u.out_size();
        let positions = out_h * out_w;
        let image = self.channels * u.height * u.width;
        let rows = self.channels * u.kernel * u.kernel;
        let mut grad = vec![0f32; self.batch * image];
        grad.par_chunks_mut(image).enumerate().for_each(|(b, img)| {
            for row in 0..rows {
                let start = (row * self.batch + b) * positions;
                let src = &columns[start..start + positions];
                u.for_each_tap(row, |pos, pixel| img[pixel] += src[pos]);
            }
        });
        Ok((CpuStorage::F32(grad), Shape::from((self.batch, self.channels, u.height, u.width))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    use super::*;

    /// Forward values and all three gradients match candle's own conv2d: the frame encoder's
    /// stride-2 3x3, odd sizes, a 1x1 kernel, no padding, a patch embedding (kernel = stride).
    /// Square images only, as frames are: candle's own backward fails on others.
    #[test]
    fn unfolded_convolution_matches_candle_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (c_in, c_out, k, stride, padding, size) in
            [(3, 5, 3, 2, 1, 9), (4, 6, 3, 1, 1, 7), (3, 2, 1, 1, 0, 5), (2, 3, 3, 2, 0, 8), (3, 4, 4, 4, 0, 8)]
        {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
            let cfg = Conv2dConfig { padding, stride, ..Default::default() };
            let conv = Conv::new(c_in, c_out, k, cfg, vb)?;
            let input = Var::randn(0f32, 1.0, (2, c_in, size, size), &dev)?;
            let probe = Tensor::randn(0f32, 1.0, conv.inner.forward(input.as_tensor())?.shape(), &dev)?;

            let ours = conv.forward(input.as_tensor())?;
            let theirs = input
                .as_tensor()
                .conv2d(conv.inner.weight(), padding, stride, 1, 1)?
                .broadcast_add(&conv.inner.bias().expect("bias").reshape((1, c_out, 1, 1))?)?;
            let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> { (a - b)?.abs()?.max_all()?.to_scalar() };
            assert!(max_diff(&ours, &theirs)? < 1e-5, "forward differs for k={k} stride={stride}");

            let g_ours = (ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &probe)?.sum_all()?.backward()?;
            for t in [input.as_tensor(), conv.inner.weight(), conv.inner.bias().expect("bias")] {
                let (a, b) = (g_ours.get(t).expect("gradient"), g_theirs.get(t).expect("gradient"));
                assert!(max_diff(a, b)? < 1e-4, "gradient differs for k={k} stride={stride}");
            }
        }
        Ok(())
    }
}
