//! The decoder's feed-forward: dense, a sparse mixture of experts, or MoRE's LoRA experts.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear_no_bias, Init, Linear, VarBuilder};
use rayon::prelude::*;

use super::config::{ExpertAct, FeedForwardConfig, FeedForwardKind};
use super::layers::{gate, GatedFfn};

/// Tokens routed to each expert, per decoder layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpertLoad {
    /// `counts[layer][expert]`.
    pub counts: Vec<Vec<u32>>,
}

impl ExpertLoad {
    pub fn new(layers: usize, experts: usize) -> Self {
        Self { counts: vec![vec![0; experts]; layers] }
    }

    /// Share of routed tokens per expert, summed over layers.
    pub fn fractions(&self) -> Vec<f32> {
        let experts = self.counts.first().map_or(0, Vec::len);
        let mut totals = vec![0f32; experts];
        for layer in &self.counts {
            for (t, c) in totals.iter_mut().zip(layer) {
                *t += *c as f32;
            }
        }
        let sum: f32 = totals.iter().sum();
        if sum > 0.0 {
            totals.iter_mut().for_each(|t| *t /= sum);
        }
        totals
    }
}

/// What one feed-forward layer's routing did on a forward pass.
#[derive(Debug, Clone)]
pub struct LayerRouting {
    /// Tokens routed to each expert (one entry for a dense layer).
    pub load: Vec<u32>,
    /// The router's decisions (None for a dense layer); the balance loss is computed from them
    /// only when training asks, so inference pays nothing for it.
    routing: Option<Routing>,
}

impl LayerRouting {
    fn routed(plan: &Dispatch, routing: Routing) -> Self {
        Self { load: plan.rows.iter().map(|rows| rows.len() as u32).collect(), routing: Some(routing) }
    }

    /// This layer's load-balancing loss (`Routing::balance_loss`); None for a dense layer.
    pub fn balance_loss(&self) -> Result<Option<Tensor>> {
        self.routing.as_ref().map(Routing::balance_loss).transpose()
    }
}

/// The routing statistics of every decoder layer on one forward pass, first layer first.
#[derive(Debug, Clone, Default)]
pub struct DecoderRouting {
    pub layers: Vec<LayerRouting>,
}

impl DecoderRouting {
    /// Adds this pass's token counts into `load` (`load.counts[layer][expert]`).
    pub fn add_load_to(&self, load: &mut ExpertLoad) {
        for (counts, layer) in load.counts.iter_mut().zip(&self.layers) {
            for (c, n) in counts.iter_mut().zip(&layer.load) {
                *c += n;
            }
        }
    }

    /// The mean load-balancing loss over the mixture layers; zero (on `device`) for a dense decoder.
    pub fn balance_loss(&self, device: &candle_core::Device) -> Result<Tensor> {
        let losses = self.layers.iter().filter_map(|l| l.balance_loss().transpose()).collect::<Result<Vec<_>>>()?;
        match losses.len() {
            0 => Tensor::zeros((), candle_core::DType::F32, device),
            n => Tensor::stack(&losses, 0)?.sum_all()? / n as f64,
        }
    }
}

/// Which experts each token uses and with what weight.
#[derive(Debug, Clone)]
pub struct Routing {
    /// `experts[n]`: the top-k expert ids of token n, best first.
    pub experts: Vec<Vec<u32>>,
    /// [N, k]: softmax over the selected logits, in the order of `experts`.
    pub weights: Tensor,
    /// [N, E]: the router's logits over every expert.
    pub logits: Tensor,
}

impl Routing {
    /// The Switch Transformer's load-balancing loss `E * sum_e f_e * P_e`: `f_e` the share of
    /// routed slots expert e received (no gradient), `P_e` its mean router probability. It is 1
    /// for a perfectly even router and grows as routing collapses onto few experts.
    pub fn balance_loss(&self) -> Result<Tensor> {
        let experts = self.logits.dim(1)?;
        let probs = candle_nn::ops::softmax(&self.logits, D::Minus1)?.mean(0)?; // [E]
        let slots = self.experts.iter().map(Vec::len).sum::<usize>().max(1) as f32;
        let mut share = vec![0f32; experts];
        for &e in self.experts.iter().flatten() {
            share[e as usize] += 1.0 / slots;
        }
        let share = Tensor::from_vec(share, experts, probs.device())?;
        (probs * share)?.sum_all()? * experts as f64
    }
}

/// The router: a linear map to expert logits, top-k selection, softmax over the selected logits.
#[derive(Debug, Clone)]
pub struct Router {
    gate: Linear,
    top_k: usize,
}

impl Router {
    pub fn new(d_model: usize, experts: usize, top_k: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { gate: linear_no_bias(d_model, experts, vb.pp("router"))?, top_k })
    }

    /// `xs`: [N, D].
    pub fn route(&self, xs: &Tensor) -> Result<Routing> {
        let logits = self.gate.forward(xs)?; // [N, E]
        let experts = top_k_rows(&logits.to_vec2::<f32>()?, self.top_k);
        let n = experts.len();
        let flat: Vec<u32> = experts.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, (n, self.top_k), xs.device())?;
        let selected = logits.gather(&idx, 1)?; // [N, k]
                                                // The generic softmax keeps the router trainable (the fused one has no CPU gradient).
        let weights = candle_nn::ops::softmax(&selected, D::Minus1)?;
        Ok(Routing { experts, weights, logits })
    }
}

/// Indices of the `k` largest values of each row, largest first (ties: lower index first).
pub fn top_k_rows(rows: &[Vec<f32>], k: usize) -> Vec<Vec<u32>> {
    rows.iter()
        .map(|row| {
            let mut order: Vec<u32> = (0..row.len() as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            order.truncate(k);
            order
        })
        .collect()
}

/// Token rows and weight positions gathered per expert.
struct Dispatch {
    /// Per expert: the token rows it serves.
    rows: Vec<Vec<u32>>,
    /// Per expert: the flat index `n * k + slot` of each row's weight.
    weight_slots: Vec<Vec<u32>>,
}

fn dispatch(routing: &Routing, experts: usize) -> Dispatch {
    let mut rows = vec![Vec::new(); experts];
    let mut weight_slots = vec![Vec::new(); experts];
    for (n, chosen) in routing.experts.iter().enumerate() {
        for (slot, &e) in chosen.iter().enumerate() {
            rows[e as usize].push(n as u32);
            weight_slots[e as usize].push((n * chosen.len() + slot) as u32);
        }
    }
    Dispatch { rows, weight_slots }
}

/// Runs `expert(e, rows_of_xs)` for every expert that has tokens, scales by the routing weight and
/// scatter-adds back into an [N, D] output. Only the selected experts run.
fn mix(
    xs: &Tensor,
    routing: &Routing,
    plan: &Dispatch,
    expert: impl Fn(usize, &Tensor, &Tensor) -> Result<Tensor> + Sync,
) -> Result<Tensor> {
    let (n, d) = xs.dims2()?;
    let device = xs.device();
    let weights = routing.weights.flatten_all()?;
    // Experts are independent: run them on the pool's threads, then scatter-add in a fixed order
    // so the sum does not depend on scheduling.
    let outputs = plan
        .rows
        .par_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(e, rows)| -> Result<(Tensor, Tensor)> {
            let idx = Tensor::new(rows.as_slice(), device)?;
            let slots = Tensor::new(plan.weight_slots[e].as_slice(), device)?;
            let w = weights.index_select(&slots, 0)?.unsqueeze(1)?; // [n_e, 1]
                                                                    // An expert serving every row (always so for a single decoding token) needs no gather.
            let x = if rows.len() == n { xs.clone() } else { xs.index_select(&idx, 0)? };
            let ys = expert(e, &idx, &x)?.broadcast_mul(&w)?;
            Ok((idx, ys))
        })
        .collect::<Result<Vec<_>>>()?;
    // One scatter-add for all experts: one per expert would copy the whole output each time, and
    // again in the backward pass.
    let (idx, ys): (Vec<Tensor>, Vec<Tensor>) = outputs.into_iter().unzip();
    Tensor::zeros((n, d), xs.dtype(), device)?.index_add(&Tensor::cat(&idx, 0)?, &Tensor::cat(&ys, 0)?, 0)
}

/// GeRM's sparse mixture: `experts` gated feed-forwards, top-k routing.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    router: Router,
    experts: Vec<GatedFfn>,
}

impl SparseMoe {
    pub fn new(d_model: usize, cfg: &FeedForwardConfig, vb: VarBuilder) -> Result<Self> {
        let experts = (0..cfg.experts)
            .map(|e| GatedFfn::new(d_model, cfg.hidden, cfg.expert_act, vb.pp(format!("experts.{e}"))))
            .collect::<Result<_>>()?;
        Ok(Self { router: Router::new(d_model, cfg.experts, cfg.top_k, vb)?, experts })
    }

    /// The mixture with its experts' weights in bf16 (the router stays f32).
    pub fn to_bf16(&self) -> Result<Self> {
        let experts = self.experts.iter().map(GatedFfn::to_bf16).collect::<Result<_>>()?;
        Ok(Self { router: self.router.clone(), experts })
    }

    /// `xs`: [N, D] -> [N, D] and what the router did.
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, LayerRouting)> {
        let routing = self.router.route(xs)?;
        let plan = dispatch(&routing, self.experts.len());
        let ys = mix(xs, &routing, &plan, |e, _, x| self.experts[e].forward(x))?;
        Ok((ys, LayerRouting::routed(&plan, routing)))
    }
}

/// One LoRA adapter: `x -> up(down(x))` with rank r.
#[derive(Debug, Clone)]
struct LoraAdapter {
    a: Linear,
    b: Linear,
}

impl LoraAdapter {
    fn new(d_in: usize, d_out: usize, rank: usize, vb: VarBuilder) -> Result<Self> {
        let a = linear_no_bias(d_in, rank, vb.pp("a"))?;
        // Small random B (not LoRA's usual zero) so freshly initialised experts differ.
        let b = Linear::new(vb.pp("b").get_with_hints((d_out, rank), "weight", Init::Randn { mean: 0.0, stdev: 0.02 })?, None);
        Ok(Self { a, b })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.b.forward(&self.a.forward(xs)?)
    }
}

/// MoRE's variant: one dense gated feed-forward shared by all experts, each expert a LoRA adapter
/// on the up (w1, w3) and down (w2) projections.
#[derive(Debug, Clone)]
pub struct LoraMoe {
    router: Router,
    shared: GatedFfn,
    adapters: Vec<[LoraAdapter; 3]>,
    act: ExpertAct,
}

impl LoraMoe {
    pub fn new(d_model: usize, cfg: &FeedForwardConfig, vb: VarBuilder) -> Result<Self> {
        let (h, r) = (cfg.hidden, cfg.lora_rank);
        let adapters = (0..cfg.experts)
            .map(|e| {
                let vb = vb.pp(format!("adapters.{e}"));
                Ok([
                    LoraAdapter::new(d_model, h, r, vb.pp("w1"))?,
                    LoraAdapter::new(d_model, h, r, vb.pp("w3"))?,
                    LoraAdapter::new(h, d_model, r, vb.pp("w2"))?,
                ])
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            router: Router::new(d_model, cfg.experts, cfg.top_k, vb.clone())?,
            shared: GatedFfn::new(d_model, h, cfg.expert_act, vb.pp("shared"))?,
            adapters,
            act: cfg.expert_act,
        })
    }

    /// Expert `e` on rows `xs` whose shared up projections are `(u1, u3)`.
    fn expert(&self, e: usize, xs: &Tensor, u1: &Tensor, u3: &Tensor) -> Result<Tensor> {
        let [a1, a3, a2] = &self.adapters[e];
        let u1 = (u1 + a1.forward(xs)?)?;
        let u3 = (u3 + a3.forward(xs)?)?;
        let hidden = gate(&u1, &u3, self.act)?;
        self.shared.down(&hidden)? + a2.forward(&hidden)?
    }

    /// `xs`: [N, D] -> [N, D] and what the router did.
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, LayerRouting)> {
        let routing = self.router.route(xs)?;
        // The shared up projections are computed once for all tokens.
        let (u1, u3) = self.shared.up(xs)?;
        let plan = dispatch(&routing, self.adapters.len());
        let ys = mix(xs, &routing, &plan, |e, idx, x| self.expert(e, x, &u1.index_select(idx, 0)?, &u3.index_select(idx, 0)?))?;
        Ok((ys, LayerRouting::routed(&plan, routing)))
    }
}

#[derive(Debug, Clone)]
pub enum FeedForward {
    Dense(GatedFfn),
    Moe(SparseMoe),
    Lora(LoraMoe),
}

impl FeedForward {
    pub fn new(d_model: usize, cfg: &FeedForwardConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.kind {
            FeedForwardKind::Dense => Self::Dense(GatedFfn::new(d_model, cfg.hidden, cfg.expert_act, vb)?),
            FeedForwardKind::Moe => Self::Moe(SparseMoe::new(d_model, cfg, vb)?),
            FeedForwardKind::Lora => Self::Lora(LoraMoe::new(d_model, cfg, vb)?),
        })
    }

    /// The layer with its feed-forward weights in bf16 (LoRA adapters stay f32: they are small).
    pub fn to_bf16(&self) -> Result<Self> {
        Ok(match self {
            Self::Dense(ffn) => Self::Dense(ffn.to_bf16()?),
            Self::Moe(moe) => Self::Moe(moe.to_bf16()?),
            Self::Lora(lora) => Self::Lora(LoraMoe { shared: lora.shared.to_bf16()?, ..lora.clone() }),
        })
    }

    /// `xs`: [B, T, D] -> [B, T, D] and this layer's routing statistics (a dense layer counts
    /// every token against its one "expert" and has no balance loss).
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, LayerRouting)> {
        let (b, t, d) = xs.dims3()?;
        let flat = xs.reshape((b * t, d))?;
        let (ys, routing) = match self {
            Self::Dense(ffn) => (ffn.forward(&flat)?, LayerRouting { load: vec![(b * t) as u32], routing: None }),
            Self::Moe(moe) => moe.forward(&flat)?,
            Self::Lora(lora) => lora.forward(&flat)?,
        };
        Ok((ys.reshape((b, t, d))?, routing))
    }
}

/// All-zero expert load for the configuration (one column for a dense layer).
pub fn empty_load(layers: usize, cfg: &FeedForwardConfig) -> ExpertLoad {
    let experts = if cfg.kind == FeedForwardKind::Dense { 1 } else { cfg.experts };
    ExpertLoad::new(layers, experts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{ExpertAct, FeedForwardKind};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn cfg(kind: FeedForwardKind, act: ExpertAct) -> FeedForwardConfig {
        FeedForwardConfig { kind, experts: 6, top_k: 2, hidden: 24, expert_act: act, lora_rank: 3 }
    }

    fn inputs(n: usize, d: usize) -> Tensor {
        Tensor::randn(0f32, 1.0, (n, d), &Device::Cpu).unwrap()
    }

    /// [N, E] gate matrix: softmax over the top-k logits at the selected experts, zero elsewhere,
    /// computed independently of the router code.
    fn dense_gates(logits: &Tensor, k: usize) -> Tensor {
        let rows = logits.to_vec2::<f32>().unwrap();
        let e = rows[0].len();
        let mut gates = vec![0f32; rows.len() * e];
        for (n, row) in rows.iter().enumerate() {
            let mut sorted = row.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let threshold = sorted[k - 1];
            let chosen: Vec<usize> = (0..e).filter(|&i| row[i] >= threshold).collect();
            assert_eq!(chosen.len(), k, "random logits have no ties");
            let z: f32 = chosen.iter().map(|&i| (row[i] - sorted[0]).exp()).sum();
            for &i in &chosen {
                gates[n * e + i] = (row[i] - sorted[0]).exp() / z;
            }
        }
        Tensor::from_vec(gates, (rows.len(), e), &Device::Cpu).unwrap()
    }

    /// sum_e gates[:, e] * expert_e(x) with every expert run on every token.
    fn dense_mixture(gates: &Tensor, outputs: &[Tensor]) -> Tensor {
        let mut acc = outputs[0].zeros_like().unwrap();
        for (e, y) in outputs.iter().enumerate() {
            acc = (acc + y.broadcast_mul(&gates.narrow(1, e, 1).unwrap()).unwrap()).unwrap();
        }
        acc
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn sparse_moe_equals_dense_reference() {
        for act in [ExpertAct::Germ, ExpertAct::Swiglu] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let c = cfg(FeedForwardKind::Moe, act);
            let moe = SparseMoe::new(16, &c, vb).unwrap();
            let xs = inputs(37, 16);
            let gates = dense_gates(&moe.router.gate.forward(&xs).unwrap(), c.top_k);
            let outputs: Vec<Tensor> = moe.experts.iter().map(|e| e.forward(&xs).unwrap()).collect();
            let reference = dense_mixture(&gates, &outputs);
            let (sparse, routing) = moe.forward(&xs).unwrap();
            let load = routing.load;
            assert!(max_abs_diff(&sparse, &reference) < 1e-5, "{act:?}");
            // Each token is counted once for each of its k experts, and only selected experts ran.
            let selected: Vec<u32> = (0..c.experts)
                .map(|e| gates.narrow(1, e, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .map(|col| col.iter().filter(|g| **g > 0.0).count() as u32)
                .collect();
            assert_eq!(load, selected);
            assert_eq!(load.iter().sum::<u32>(), 37 * 2);
        }
    }

    #[test]
    fn lora_moe_equals_dense_reference() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let c = cfg(FeedForwardKind::Lora, ExpertAct::Germ);
        let lora = LoraMoe::new(16, &c, vb).unwrap();
        let xs = inputs(29, 16);
        let gates = dense_gates(&lora.router.gate.forward(&xs).unwrap(), c.top_k);
        // Expert e written out in full: W + B_e A_e on each projection.
        let outputs: Vec<Tensor> = lora
            .adapters
            .iter()
            .map(|[a1, a3, a2]| {
                let (u1, u3) = lora.shared.up(&xs).unwrap();
                let u1 = (u1 + a1.forward(&xs).unwrap()).unwrap();
                let u3 = (u3 + a3.forward(&xs).unwrap()).unwrap();
                let h = (u1 * u3).unwrap().silu().unwrap();
                (lora.shared.down(&h).unwrap() + a2.forward(&h).unwrap()).unwrap()
            })
            .collect();
        // The adapters make the experts differ, or this test would prove little.
        assert!(max_abs_diff(&outputs[0], &outputs[1]) > 1e-4);
        let reference = dense_mixture(&gates, &outputs);
        let (sparse, _) = lora.forward(&xs).unwrap();
        assert!(max_abs_diff(&sparse, &reference) < 1e-5);
    }

    #[test]
    fn top_k_selects_the_largest_logits() {
        let logits = Tensor::randn(0f32, 1.0, (50, 8), &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        for k in 1..=8 {
            for (row, chosen) in logits.iter().zip(top_k_rows(&logits, k)) {
                assert_eq!(chosen.len(), k);
                for w in chosen.windows(2) {
                    assert!(row[w[0] as usize] >= row[w[1] as usize], "best first");
                }
                let weakest = row[*chosen.last().unwrap() as usize];
                for (i, v) in row.iter().enumerate() {
                    if !chosen.contains(&(i as u32)) {
                        assert!(*v <= weakest, "unselected {v} beats selected {weakest}");
                    }
                }
            }
        }
        assert_eq!(top_k_rows(&[vec![1.0, 3.0, 3.0, 2.0]], 2), vec![vec![1, 2]]);
    }

    #[test]
    fn routing_weights_sum_to_one() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let router = Router::new(16, 6, 2, vb).unwrap();
        let routing = router.route(&inputs(11, 16)).unwrap();
        for row in routing.weights.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(row[0] >= row[1]);
        }
    }

    #[test]
    fn expert_load_fractions() {
        let load = ExpertLoad { counts: vec![vec![1, 3], vec![2, 2]] };
        assert_eq!(load.fractions(), vec![0.375, 0.625]);
    }
}
