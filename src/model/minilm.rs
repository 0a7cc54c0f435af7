//! A frozen BERT sentence encoder (all-MiniLM-L6-v2 and its kind): token states, then the mean over
//! the attention mask and L2 normalisation, exactly as sentence-transformers computes the sentence
//! embedding. Inference only: its weights are never trained here.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of a Hugging Face BERT `config.json` this encoder uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Only "gelu" (the exact, erf form) is supported.
    pub hidden_act: String,
}

impl BertConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_act != "gelu" {
            return Err(format!("hidden_act {:?} is not supported (only \"gelu\")", self.hidden_act));
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of {} heads", self.hidden_size, self.num_attention_heads));
        }
        if self.max_position_embeddings == 0 || self.type_vocab_size == 0 {
            return Err("max_position_embeddings and type_vocab_size must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    out: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl BertLayer {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attn = vb.pp("attention");
        Ok(Self {
            query: linear(h, h, attn.pp("self.query"))?,
            key: linear(h, h, attn.pp("self.key"))?,
            value: linear(h, h, attn.pp("self.value"))?,
            attn_out: linear(h, h, attn.pp("output.dense"))?,
            attn_norm: layer_norm(h, eps, attn.pp("output.LayerNorm"))?,
            intermediate: linear(h, i, vb.pp("intermediate.dense"))?,
            out: linear(i, h, vb.pp("output.dense"))?,
            out_norm: layer_norm(h, eps, vb.pp("output.LayerNorm"))?,
            heads: cfg.num_attention_heads,
        })
    }

    /// Post-norm block (BERT). `bias`: [B, 1, 1, L] additive, hiding padded keys.
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, l, h) = xs.dims3()?;
        let hd = h / self.heads;
        let split = |t: Tensor| t.reshape((b, l, self.heads, hd))?.transpose(1, 2)?.contiguous();
        let q = split(self.query.forward(xs)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(bias)?;
        let ctx = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        let xs = self.attn_norm.forward(&(self.attn_out.forward(&ctx)? + xs)?)?;
        let ff = self.out.forward(&self.intermediate.forward(&xs)?.gelu_erf()?)?;
        self.out_norm.forward(&(ff + xs)?)
    }
}

/// BERT's encoder stack over word, position and token-type embeddings.
#[derive(Debug, Clone)]
pub struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    layers: Vec<BertLayer>,
    cfg: BertConfig,
}

impl Bert {
    /// `vb` names tensors as the Hugging Face checkpoint does (`embeddings.*`, `encoder.layer.N.*`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let (h, emb) = (cfg.hidden_size, vb.pp("embeddings"));
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            words: embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?,
            positions: embedding(cfg.max_position_embeddings, h, emb.pp("position_embeddings"))?,
            token_types: embedding(cfg.type_vocab_size, h, emb.pp("token_type_embeddings"))?,
            norm: layer_norm(h, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// `ids`: [B, L] u32 (one segment, L <= max_position_embeddings); `mask`: [B, L] f32, 1 for
    /// real tokens. Returns the last layer's token states [B, L, hidden].
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        if l > self.cfg.max_position_embeddings {
            candle_core::bail!("{l} tokens; the encoder takes at most {}", self.cfg.max_position_embeddings);
        }
        let positions = Tensor::arange(0u32, l as u32, ids.device())?.unsqueeze(0)?;
        let types = Tensor::zeros((b, l), DType::U32, ids.device())?;
        let xs = self.words.forward(ids)?.broadcast_add(&self.positions.forward(&positions)?)?;
        let mut xs = self.norm.forward(&(xs + self.token_types.forward(&types)?)?)?;
        // As Hugging Face: padded keys get the most negative float, so they weigh exactly 0.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)?.neg()? * f32::MIN as f64)?.unsqueeze(1)?.unsqueeze(1)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &bias)?;
        }
        Ok(xs)
    }
}

/// sentence-transformers' sentence embedding: the mean of the token states over the attention
/// mask, L2-normalised. `states`: [B, L, H], `mask`: [B, L] f32 -> [B, H].
pub fn mean_pool_normalised(states: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let w = mask.unsqueeze(D::Minus1)?;
    let sum = states.broadcast_mul(&w)?.sum(1)?;
    // sentence-transformers clamps the count at 1e-9 and the norm at 1e-12.
    let mean = sum.broadcast_div(&w.sum(1)?.clamp(1e-9, f64::INFINITY)?)?;
    let norm = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    mean.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tiny() -> BertConfig {
        BertConfig {
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 12,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }

    fn bert() -> Bert {
        let vb = VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
        Bert::new(&tiny(), vb).unwrap()
    }

    #[test]
    fn padding_changes_neither_the_real_tokens_nor_the_embedding() {
        let bert = bert();
        let ids = Tensor::new(&[[3u32, 7, 9]], &Device::Cpu).unwrap();
        let alone = bert.forward(&ids, &Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let padded_ids = Tensor::new(&[[3u32, 7, 9, 0, 0]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.]], &Device::Cpu).unwrap();
        let padded = bert.forward(&padded_ids, &mask).unwrap();
        let diff = (padded.narrow(1, 0, 3).unwrap() - &alone).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let e1 = mean_pool_normalised(&alone, &Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let e2 = mean_pool_normalised(&padded, &mask).unwrap();
        let diff = (e1.clone() - e2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
        let norm = e1.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn unsupported_configs_are_refused() {
        let mut cfg = tiny();
        cfg.hidden_act = "relu".into();
        assert!(cfg.validate().unwrap_err().contains("relu"));
        let vb = VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
        let long = Tensor::zeros((1, 13), DType::U32, &Device::Cpu).unwrap();
        let err = Bert::new(&tiny(), vb).unwrap().forward(&long, &Tensor::ones((1, 13), DType::F32, &Device::Cpu).unwrap());
        assert!(err.unwrap_err().to_string().contains("at most 12"));
    }
}
