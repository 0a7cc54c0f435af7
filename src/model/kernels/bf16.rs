//! bf16 weight storage with an f32-accumulating matrix-vector kernel for batch-1 decoding.
//!
//! A single-token decoder step on the CPU is bound by the bytes of weights it streams; holding
//! them as bf16 halves those bytes. Inputs, accumulation and outputs stay f32.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

use super::fused::contiguous_f32;

/// Inputs with at most this many rows use the bf16 kernel; larger batches (a full observation
/// prefix) are compute-bound and go to the f32 matrix multiply.
pub const MAX_ROWS: usize = 16;

/// Weights per parallel task (64 KiB of bf16): large matrices are split over the pool's threads
/// (a single core does not saturate memory bandwidth), small ones stay on one.
const PARALLEL_BLOCK: usize = 32 * 1024;

/// A weight matrix [out, in] in bf16, applied as `x W^T` to f32 rows.
#[derive(Debug, Clone)]
pub struct Bf16Matrix {
    out: usize,
    inp: usize,
    data: Vec<u16>,
}

impl Bf16Matrix {
    /// `weight`: [out, in] f32.
    pub fn new(weight: &Tensor) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let data = weight.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|w| bf16::from_f32(w).to_bits()).collect();
        Ok(Self { out, inp, data })
    }

    /// The f32 values this matrix holds, [out, in]: the weight rounded to bf16.
    pub fn to_f32(&self, device: &candle_core::Device) -> Result<Tensor> {
        let values: Vec<f32> = self.data.iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
        Tensor::from_vec(values, (self.out, self.inp), device)
    }
}

impl CustomOp1 for Bf16Matrix {
    fn name(&self) -> &'static str {
        "bf16-matvec"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.inp) {
            candle_core::bail!("bf16-matvec: input {:?} for a weight of {} inputs", dims, self.inp);
        }
        let rows = xs.len() / self.inp;
        // Output-major ([out, rows]) so threads can take disjoint blocks of weight rows.
        let mut by_output = vec![0f32; self.out * rows];
        let block = PARALLEL_BLOCK.div_ceil(self.inp).max(1);
        by_output.par_chunks_mut(block * rows).zip(self.data.par_chunks(block * self.inp)).for_each(|(ys, ws)| {
            for (y, w) in ys.chunks_exact_mut(rows).zip(ws.chunks_exact(self.inp)) {
                for (y, x) in y.iter_mut().zip(xs.chunks_exact(self.inp)) {
                    *y = dot(w, x);
                }
            }
        });
        let mut ys = vec![0f32; rows * self.out];
        for (o, column) in by_output.chunks_exact(rows).enumerate() {
            for (r, y) in column.iter().enumerate() {
                ys[r * self.out + o] = *y;
            }
        }
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = self.out;
        Ok((CpuStorage::F32(ys), Shape::from(shape)))
    }
}

/// `sum_i bf16(w[i]) * x[i]` in f32.
fn dot(w: &[u16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { dot_avx2(w, x) };
    }
    w.iter().zip(x).map(|(&w, &x)| bf16::from_bits(w).to_f32() * x).sum()
}

/// bf16 is the top half of an f32: widen each u16 to 32 bits and shift it into place.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = w.len().min(x.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        let lo = _mm_loadu_si128(w.as_ptr().add(i) as *const __m128i);
        let hi = _mm_loadu_si128(w.as_ptr().add(i + 8) as *const __m128i);
        let w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(lo), 16));
        let w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(hi), 16));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x.as_ptr().add(i)), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc1);
        i += 16;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let mut sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
    for j in i..n {
        sum += half::bf16::from_bits(w[j]).to_f32() * x[j];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn the_kernel_equals_an_f32_product_with_the_rounded_weights() {
        let dev = Device::Cpu;
        // 37 inputs: the vector loop and the scalar tail both run.
        let w = Tensor::randn(0f32, 1.0, (11, 37), &dev).unwrap();
        let m = Bf16Matrix::new(&w).unwrap();
        let rounded = m.to_f32(&dev).unwrap();
        assert!((&rounded - &w).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
        for rows in [1, 3, MAX_ROWS] {
            let xs = Tensor::randn(0f32, 1.0, (1, rows, 37), &dev).unwrap();
            let fast = xs.apply_op1_no_bwd(&m).unwrap();
            let reference = candle_nn::Linear::new(rounded.clone(), None).forward(&xs).unwrap();
            assert_eq!(fast.dims(), &[1, rows, 11]);
            let diff = (fast - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{rows} rows: {diff}");
        }
    }
}
