//! Weights I/O: seeded initialisation, safetensors save with a checksum, and a checked load that
//! rejects corrupt files and weights that do not match the config.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::config::VlaConfig;
use super::vla::VlaModel;

const CHECKSUM_KEY: &str = "moe_vla.crc32";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corrupt weights file {path}: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("weights in {path} do not match the config: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Serves tensors from a map and records which names the model asked for.
struct CheckedTensors {
    tensors: HashMap<String, Tensor>,
    used: Mutex<HashSet<String>>,
}

impl SimpleBackend for CheckedTensors {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!("{name} has shape {:?}, the config needs {:?}", t.dims(), s.dims());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| candle_core::Error::Msg(format!("{name} is missing")))?;
        self.used.lock().expect("no panics while held").insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Creates every tensor the model asks for from a seeded generator, so `init` is reproducible.
struct SeededInit {
    seed: u64,
    created: Mutex<BTreeMap<String, Tensor>>,
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut hasher = DefaultHasher::new();
        (self.seed, name).hash(&mut hasher);
        let mut rng = StdRng::seed_from_u64(hasher.finish());
        let n = s.elem_count();
        let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Vec<f32> {
            (0..n).map(|_| (mean + std * rng.sample::<f64, _>(StandardNormal)) as f32).collect()
        };
        let uniform =
            |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..up) as f32).collect() };
        let values = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Kaiming { dist, fan, non_linearity } => {
                let fan = fan.for_shape(&s);
                let std = non_linearity.gain() / (fan as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                    NormalOrUniform::Uniform => uniform(&mut rng, -(3f64.sqrt()) * std, 3f64.sqrt() * std),
                }
            }
        };
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        self.created.lock().expect("no panics while held").insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a fresh model has no stored tensors")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Lets a backend be handed to a `VarBuilder` and still be read afterwards.
struct Shared<B>(Arc<B>);

impl<B: SimpleBackend> SimpleBackend for Shared<B> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// A randomly initialised model (reproducible for a seed) and its named tensors.
pub fn init_model(cfg: &VlaConfig, seed: u64, device: &Device) -> Result<(VlaModel, BTreeMap<String, Tensor>), ModelError> {
    cfg.validate().map_err(ModelError::Config)?;
    let backend = Arc::new(SeededInit { seed, created: Mutex::new(BTreeMap::new()) });
    let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, device.clone());
    let model = VlaModel::new(cfg, vb)?;
    let tensors = backend.created.lock().expect("no panics while held").clone();
    Ok((model, tensors))
}

/// A `VarBuilder` whose every tensor comes from a generator seeded by `seed` and the tensor's
/// name: reproducible random weights for any module.
pub fn seeded_var_builder(seed: u64, device: &Device) -> VarBuilder<'static> {
    let backend = SeededInit { seed, created: Mutex::new(BTreeMap::new()) };
    VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
}

/// CRC32 over names and data, in name order.
fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> u32 {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut h = crc32fast::Hasher::new();
    for (name, bytes) in sorted {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    h.finalize()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Writes f32 tensors as safetensors, with a CRC32 of names and data in the header metadata.
pub fn save_weights(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let mut bytes = BTreeMap::new();
    let mut shapes = BTreeMap::new();
    for (name, t) in tensors {
        let t = t.to_dtype(DType::F32)?.flatten_all()?;
        let data: Vec<u8> = t.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.insert(name.clone(), data);
        shapes.insert(name.clone(), tensors[name].dims().to_vec());
    }
    let crc = checksum(bytes.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let metadata = HashMap::from([(CHECKSUM_KEY.to_string(), crc.to_string())]);
    let views = bytes
        .iter()
        .map(|(name, data)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shapes[name].clone(), data)
                .expect("shape and byte length agree by construction");
            (name.clone(), view)
        })
        .collect::<Vec<_>>();
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| ModelError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })
}

/// Reads a safetensors file into f32 tensors, verifying its checksum (when it has one) and that
/// every value is finite.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let corrupt = |reason: String| ModelError::CorruptWeights { path: path.to_path_buf(), reason };
    let file = safetensors::SafeTensors::deserialize(&data).map_err(|e| corrupt(e.to_string()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&data).map_err(|e| corrupt(e.to_string()))?;
    let views = file.tensors();
    if let Some(expected) = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) {
        let actual = checksum(views.iter().map(|(n, v)| (n.as_str(), v.data()))).to_string();
        if &actual != expected {
            return Err(corrupt(format!("checksum {actual} does not match the recorded {expected}")));
        }
    }
    let mut tensors = HashMap::with_capacity(views.len());
    for (name, view) in views {
        let t = view.load(device).map_err(|e| corrupt(format!("{name}: {e}")))?.to_dtype(DType::F32)?;
        let finite = t.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite());
        if !finite {
            return Err(corrupt(format!("{name} holds non-finite values")));
        }
        tensors.insert(name, t);
    }
    Ok(tensors)
}

/// Builds the model of `cfg` from a weights file; every tensor must exist with the right shape
/// and the file must hold nothing else.
pub fn load_model(cfg: &VlaConfig, path: &Path, device: &Device) -> Result<(VlaModel, ParamCount), ModelError> {
    cfg.validate().map_err(ModelError::Config)?;
    let tensors = read_weights(path, device)?;
    let params = count_params(cfg, tensors.iter());
    let names: Vec<String> = tensors.keys().cloned().collect();
    let backend = Arc::new(CheckedTensors { tensors, used: Mutex::new(HashSet::new()) });
    let mismatch = |reason: String| ModelError::Mismatch { path: path.to_path_buf(), reason };
    let vb = VarBuilder::from_backend(Box::new(Shared(backend.clone())), DType::F32, device.clone());
    let model = VlaModel::new(cfg, vb).map_err(|e| mismatch(e.to_string()))?;
    let used = backend.used.lock().expect("no panics while held");
    let mut unused: Vec<&String> = names.iter().filter(|n| !used.contains(*n)).collect();
    if !unused.is_empty() {
        unused.sort();
        let shown: Vec<&str> = unused.iter().take(5).map(|s| s.as_str()).collect();
        return Err(mismatch(format!("{} unexpected tensors, e.g. {}", unused.len(), shown.join(", "))));
    }
    Ok((model, params))
}

/// Parameter counts: everything, and what one decoder token actually runs (top-k of the experts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    pub total: usize,
    pub active_per_token: usize,
}

pub fn count_params<'a>(cfg: &VlaConfig, tensors: impl Iterator<Item = (&'a String, &'a Tensor)>) -> ParamCount {
    let (mut total, mut expert) = (0usize, 0usize);
    for (name, t) in tensors {
        let n = t.elem_count();
        total += n;
        if name.contains(".experts.") || name.contains(".adapters.") {
            expert += n;
        }
    }
    let f = &cfg.ffn;
    let inactive = (expert * (f.experts - f.top_k.min(f.experts))).checked_div(f.experts).unwrap_or(0);
    ParamCount { total, active_per_token: total - inactive }
}
