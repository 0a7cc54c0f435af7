//! AdamW with a cosine learning-rate schedule and global-norm gradient clipping. Its state is
//! plain named tensors, so a checkpoint can hold it and a resumed run continues bit for bit.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// `lr` and `weight_decay` are training options (`--lr`, `--weight-decay`); the rest are fixed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate (AdamW, cosine schedule after warm-up).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Gradients are scaled down when their global L2 norm exceeds this.
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, clip_norm: 1.0 }
    }
}

/// Linear warm-up to the peak rate, then a cosine decay to a tenth of it at `total` steps.
pub fn cosine_lr(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * 0.1;
    floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
}

pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far.
    pub t: usize,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = vars.iter().map(|(_, v)| v.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self { vars, m, v, t: 0, cfg })
    }

    /// One update at learning rate `lr`. Returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f32> {
        // Gradients carry the graph that computed them; detached, the moments keep data only
        // (kept with its graph, every step would hold on to all earlier ones).
        let grads: Vec<Option<Tensor>> = self.vars.iter().map(|(_, v)| grads.get(v.as_tensor()).map(Tensor::detach)).collect();
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let norm = sq.sqrt();
        let scale = if norm > self.cfg.clip_norm { self.cfg.clip_norm / norm } else { 1.0 };
        self.t += 1;
        let c = self.cfg;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let g = (g * scale)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let var = &self.vars[i].1;
            let theta = var.as_tensor();
            // Decay matrices and kernels, not biases, norms or embeddings' single vectors.
            let decay = if theta.rank() >= 2 { 1.0 - lr * c.weight_decay } else { 1.0 };
            let update = ((&m / bias1)? / ((&v / bias2)?.sqrt()? + c.eps)?)?;
            var.set(&((theta * decay)? - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm as f32)
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`).
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by `state`; every variable must be present.
    pub fn restore(&mut self, state: &std::collections::HashMap<String, Tensor>, t: usize) -> std::result::Result<(), String> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (key, slot) in [(format!("m.{name}"), &mut self.m[i]), (format!("v.{name}"), &mut self.v[i])] {
                let saved = state.get(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                if saved.dims() != var.dims() {
                    return Err(format!("optimizer state {key} has shape {:?}, expected {:?}", saved.dims(), var.dims()));
                }
                *slot = saved.clone();
            }
        }
        self.t = t;
        Ok(())
    }
}
