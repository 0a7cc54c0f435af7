//! The frozen pretrained sentence encoder (all-MiniLM-L6-v2): an encoder folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`) installed by scripts/setup.sh, found by name, checked
//! against the checksums the model recorded, and run once per instruction, never per frame.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use super::tokenize::{clip_instruction, TokenizeError};
use crate::model::{mean_pool_normalised, Bert, BertConfig, EncoderRef};

/// A folder holding encoder folders by name; searched first.
pub const ENCODERS_ENV: &str = "MOE_VLA_ENCODERS";

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2: longer instructions are cut
/// there, as sentence-transformers cuts them.
const MAX_SEQ_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error(
        "sentence encoder {name} is not installed (searched {searched}): run scripts/setup.sh, which downloads and \
         installs it, or set {ENCODERS_ENV} to a folder holding {name}/"
    )]
    NotFound { name: String, searched: String },
    #[error("sentence encoder {}: {reason}", dir.display())]
    Invalid { dir: PathBuf, reason: String },
    #[error("sentence encoder file {}: SHA-256 {actual}, but the model was trained with {expected}", path.display())]
    Checksum { path: PathBuf, actual: String, expected: String },
}

/// Where encoder `name` is looked for, in order: `$MOE_VLA_ENCODERS/<name>`, the installed
/// package's `share/moe_vla/encoders/<name>` (each `AMENT_PREFIX_PATH` entry, then the one beside
/// this executable: `<prefix>/lib/moe_vla/<exe>`), then the download cache
/// `${XDG_CACHE_HOME:-~/.cache}/moe_vla/encoders/<name>`.
pub fn encoder_search_path(name: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(ENCODERS_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    let share = |prefix: &Path| prefix.join("share/moe_vla/encoders");
    if let Some(prefixes) = std::env::var_os("AMENT_PREFIX_PATH") {
        dirs.extend(std::env::split_paths(&prefixes).filter(|p| !p.as_os_str().is_empty()).map(|p| share(&p)));
    }
    if let Some(prefix) = std::env::current_exe().ok().and_then(|exe| exe.parent()?.parent()?.parent().map(Path::to_path_buf)) {
        dirs.push(share(&prefix));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        dirs.push(cache.join("moe_vla/encoders"));
    }
    dirs.into_iter().map(|d| d.join(name)).collect()
}

/// The first folder of the search path that holds encoder `name`.
pub fn locate_encoder(name: &str) -> Result<PathBuf, EncoderError> {
    let candidates = encoder_search_path(name);
    candidates.iter().find(|d| d.join("model.safetensors").is_file()).cloned().ok_or_else(|| EncoderError::NotFound {
        name: name.to_string(),
        searched: candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An instruction through the sentence encoder.
#[derive(Debug, Clone)]
pub struct SentenceEmbedding {
    /// [1, L, E]: the last layer's token states, `[CLS]` first.
    pub tokens: Tensor,
    /// [1, E]: the mean over the tokens, L2-normalised (sentence-transformers' embedding).
    pub pooled: Tensor,
}

/// BERT, its WordPiece tokenizer and a count of the instructions it encoded.
pub struct SentenceEncoder {
    name: String,
    bert: Bert,
    tokenizer: Tokenizer,
    device: Device,
    runs: AtomicUsize,
}

impl SentenceEncoder {
    /// Finds encoder `spec.name` on the search path and loads it.
    pub fn locate(spec: &EncoderRef, device: &Device) -> Result<Self, EncoderError> {
        Self::load(&locate_encoder(&spec.name)?, spec, device)
    }

    /// Loads the encoder folder `dir`, whose files must have `spec`'s checksums and width.
    pub fn load(dir: &Path, spec: &EncoderRef, device: &Device) -> Result<Self, EncoderError> {
        let invalid = |reason: String| EncoderError::Invalid { dir: dir.to_path_buf(), reason };
        let read = |file: &str, expected: Option<&str>| -> Result<Vec<u8>, EncoderError> {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| invalid(format!("{file}: {e}")))?;
            if let Some(expected) = expected {
                let actual = sha256_hex(&bytes);
                if actual != expected {
                    return Err(EncoderError::Checksum { path, actual, expected: expected.to_string() });
                }
            }
            Ok(bytes)
        };
        let config: BertConfig =
            serde_json::from_slice(&read("config.json", None)?).map_err(|e| invalid(format!("config.json: {e}")))?;
        config.validate().map_err(|e| invalid(format!("config.json: {e}")))?;
        if config.hidden_size != spec.width {
            return Err(invalid(format!("width {}, but the model expects {}", config.hidden_size, spec.width)));
        }
        let tokenizer = Tokenizer::from_bytes(read("tokenizer.json", Some(&spec.tokenizer_sha256))?)
            .map_err(|e| invalid(format!("tokenizer.json: {e}")))?;
        let weights = read("model.safetensors", Some(&spec.weights_sha256))?;
        let tensors =
            candle_core::safetensors::load_buffer(&weights, device).map_err(|e| invalid(format!("model.safetensors: {e}")))?;
        let bert = Bert::new(&config, VarBuilder::from_tensors(tensors, DType::F32, device))
            .map_err(|e| invalid(format!("model.safetensors: {e}")))?;
        Self::new(spec.name.clone(), bert, tokenizer, device).map_err(|e| invalid(e.to_string()))
    }

    /// An encoder from its parts. The tokenizer's own padding is turned off and its truncation set
    /// to sentence-transformers' sequence length (the file's are for batch training).
    pub fn new(name: String, bert: Bert, mut tokenizer: Tokenizer, device: &Device) -> Result<Self, TokenizeError> {
        let max_length = MAX_SEQ_LEN.min(bert.config().max_position_embeddings);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        Ok(Self { name, bert, tokenizer, device: device.clone(), runs: AtomicUsize::new(0) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn width(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// WordPiece ids with `[CLS]` and `[SEP]`, cut at the encoder's sequence length.
    pub fn tokenize(&self, instruction: &str) -> Result<Vec<u32>, TokenizeError> {
        let text = clip_instruction(instruction)?;
        let encoding = self.tokenizer.encode(text, true).map_err(|e| TokenizeError::Failed(e.to_string()))?;
        let vocab = self.bert.config().vocab_size;
        let ids = encoding.get_ids().to_vec();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(TokenizeError::OutOfVocabulary { id, vocab });
        }
        Ok(ids)
    }

    /// Runs BERT over one instruction's ids.
    pub fn embed_ids(&self, ids: &[u32]) -> candle_core::Result<SentenceEmbedding> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let ids = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let mask = Tensor::ones(ids.dims(), DType::F32, &self.device)?;
        let tokens = self.bert.forward(&ids, &mask)?;
        let pooled = mean_pool_normalised(&tokens, &mask)?;
        Ok(SentenceEmbedding { tokens, pooled })
    }

    /// Instructions encoded so far: the encoder must run once per instruction, not per frame.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }
}
