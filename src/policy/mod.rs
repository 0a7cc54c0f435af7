//! Image + instruction -> preprocessing -> network -> argmax bins -> `ActionCommand`.

pub mod encoder;
pub mod history;
pub mod preprocess;
pub mod tokenize;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::action::{ActionCommand, ActionError, ActionSpace};
use crate::model::{
    load_model, DecoderState, FrameRetention, HistoryRing, ModelError, ObservationBatch, ParamCount, TextInput, TextKind,
    VlaConfig, VlaModel, WeightPrecision,
};
pub use encoder::{EncoderError, SentenceEmbedding, SentenceEncoder};
pub use history::{Admission, HistorySchedule};
pub use preprocess::{Frame, FrameError, OwnedFrame, PixelEncoding, RawFrame};
pub use tokenize::{InstructionTokenizer, TokenizeError};
pub use worker::{frame_stamp_s, Decide, FrameDecision, FrameJob, InferenceWorker};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("model folder {dir}: {file} is missing")]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("model config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error("bad image: {0}")]
    Image(#[from] FrameError),
    #[error("bad instruction: {0}")]
    Instruction(#[from] TokenizeError),
    #[error("bad frame stamp: {0} s is not a finite time")]
    Stamp(f64),
    #[error("the model produced a non-finite Q value in dimension {dim} ({name})")]
    NonFinite { dim: usize, name: String },
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error("cannot start {threads} inference threads: {reason}")]
    Threads { threads: usize, reason: String },
}

/// Which argmax procedure to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// KV cache plus per-frame token cache (production).
    Cached,
    /// A full forward pass per dimension, re-encoding every frame (GeRM's released procedure).
    Uncached,
}

/// Milliseconds spent in each stage of one decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub preprocess_ms: f32,
    pub inference_ms: f32,
    pub total_ms: f32,
}

/// What one decision produced.
#[derive(Debug, Clone)]
pub struct Decision {
    pub command: ActionCommand,
    pub bins: Vec<u32>,
    /// Q value of the chosen bin per dimension.
    pub q: Vec<f32>,
    /// Share of routed tokens per expert, over all layers.
    pub expert_load: Vec<f32>,
    pub timing: Timing,
}

/// How instruction text becomes the text encoder's input (`text.kind`).
#[derive(Clone)]
pub enum InstructionText {
    /// The model folder's word-level `tokenizer.json`.
    WordLevel(Box<InstructionTokenizer>),
    /// The frozen sentence encoder; its first `max_tokens` token states reach the decoder.
    Sentence { encoder: Arc<SentenceEncoder>, max_tokens: usize },
}

impl From<InstructionTokenizer> for InstructionText {
    fn from(tokenizer: InstructionTokenizer) -> Self {
        Self::WordLevel(Box::new(tokenizer))
    }
}

impl InstructionText {
    /// Token ids: they identify the instruction (cheap; every frame computes them).
    pub fn tokenize(&self, instruction: &str) -> Result<Vec<u32>, TokenizeError> {
        match self {
            Self::WordLevel(tokenizer) => tokenizer.encode(instruction),
            Self::Sentence { encoder, .. } => encoder.tokenize(instruction),
        }
    }

    /// The text encoder's input for one instruction's `ids` ([1, ...]). Runs the sentence
    /// encoder: call it once per instruction.
    pub fn input(&self, ids: &[u32], device: &Device) -> candle_core::Result<TextInput> {
        match self {
            Self::WordLevel(_) => Ok(TextInput::Ids(Tensor::new(ids, device)?.unsqueeze(0)?)),
            Self::Sentence { encoder, max_tokens } => {
                let e = encoder.embed_ids(ids)?;
                let keep = e.tokens.dim(1)?.min(*max_tokens);
                Ok(TextInput::Embedded { tokens: e.tokens.narrow(1, 0, keep)?, pooled: e.pooled })
            }
        }
    }
}

pub struct Policy {
    model: VlaModel,
    space: ActionSpace,
    masks: Vec<Vec<bool>>,
    text: InstructionText,
    decoder_state: DecoderState,
    /// Which frames join the history: one per the model's frame period.
    schedule: HistorySchedule,
    /// The frames that joined the history, preprocessed (the uncached procedure re-encodes them).
    frames: HistoryRing<StampedImage>,
    /// The current instruction's token ids and text-encoder input.
    instruction: Vec<u32>,
    text_input: Option<TextInput>,
    model_id: String,
    params: ParamCount,
    /// Every decision runs on this pool; the experts of a layer run on its threads in parallel.
    pool: Arc<rayon::ThreadPool>,
}

impl Policy {
    /// Loads a model folder: `config.json`, `model.safetensors` and, for a word-level model,
    /// `tokenizer.json`; a `minilm` model's sentence encoder is found by name
    /// (`encoder::encoder_search_path`) and must match its recorded checksums.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, PolicyError> {
        let file = |name: &'static str| -> Result<PathBuf, PolicyError> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(PolicyError::MissingFile { dir: dir.to_path_buf(), file: name })
            }
        };
        let config_path = file(CONFIG_FILE)?;
        let config = read_config(&config_path)?;
        let id = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let id = id.file_name().map_or_else(|| id.display().to_string(), |n| n.to_string_lossy().into_owned());
        if let (TextKind::Minilm, Some(spec)) = (config.text.kind, &config.text.encoder) {
            let encoder = Arc::new(SentenceEncoder::locate(spec, device)?);
            let (model, params) = load_model(&config, &file(WEIGHTS_FILE)?, device)?;
            let text = InstructionText::Sentence { encoder, max_tokens: config.text.max_tokens };
            return Self::new(model, params, text, id);
        }
        let tokenizer_path = file(TOKENIZER_FILE)?;
        let (model, params) = load_model(&config, &file(WEIGHTS_FILE)?, device)?;
        let tokenizer = InstructionTokenizer::from_file(&tokenizer_path, config.text.max_tokens, config.text.vocab_size)
            .map_err(|e| PolicyError::Tokenizer { path: tokenizer_path.clone(), reason: e.to_string() })?;
        let vocab = tokenizer.tokenizer().get_vocab_size(true);
        if vocab > config.text.vocab_size {
            return Err(PolicyError::Tokenizer {
                path: tokenizer_path,
                reason: format!("{vocab} tokens, but the model's vocabulary holds {}", config.text.vocab_size),
            });
        }
        Self::new(model, params, tokenizer, id)
    }

    pub fn new(
        model: VlaModel,
        params: ParamCount,
        text: impl Into<InstructionText>,
        model_id: String,
    ) -> Result<Self, PolicyError> {
        let model = match model.config().decoder_weights {
            WeightPrecision::F32 => model,
            WeightPrecision::Bf16 => model.to_bf16_decoder()?,
        };
        let config = model.config();
        let space = ActionSpace::new(&config.actions)?;
        Ok(Self {
            masks: space.valid_masks(),
            space,
            text: text.into(),
            decoder_state: DecoderState::new(&model),
            schedule: HistorySchedule::new(config.frame_period_s),
            frames: HistoryRing::new(config.history),
            instruction: Vec::new(),
            text_input: None,
            model_id,
            params,
            model,
            pool: Arc::new(thread_pool(default_threads())?),
        })
    }

    /// Runs decisions on `threads` CPU threads (default: every core).
    pub fn set_threads(&mut self, threads: usize) -> Result<(), PolicyError> {
        self.pool = Arc::new(thread_pool(threads)?);
        Ok(())
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub fn config(&self) -> &VlaConfig {
        self.model.config()
    }

    pub fn model(&self) -> &VlaModel {
        &self.model
    }

    pub fn action_space(&self) -> &ActionSpace {
        &self.space
    }

    pub fn params(&self) -> ParamCount {
        self.params
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn instruction_text(&self) -> &InstructionText {
        &self.text
    }

    /// Forgets the frame history (a new episode).
    pub fn reset(&mut self) {
        self.decoder_state.reset();
        self.schedule.restart();
        self.frames.clear();
        self.instruction.clear();
        self.text_input = None;
    }

    /// The network's input for a frame: [1, 3, S, S].
    pub fn preprocess(&self, frame: &Frame) -> Result<Tensor, PolicyError> {
        let cfg = self.config();
        let rgb = preprocess::resize_frame(frame, cfg.image_size as u32)?;
        Ok(preprocess::to_tensor(&rgb, &cfg.preprocess, self.model.device())?)
    }

    /// The stamps of the frames in the history, oldest first: one per frame period (at most
    /// `history` of them, the newest decided frame among them only if it was due).
    pub fn history_stamps(&self) -> Vec<f64> {
        self.frames.items().map(|frame| frame.stamp_s).collect()
    }

    /// One decision on the newest frame, taken at `stamp_s` seconds (the camera's stamp, on any
    /// clock that moves forward). The history holds earlier frames of the same instruction, one
    /// per the model's frame period by stamp (`HistorySchedule`); this frame joins it only if it
    /// is due. A stamp going backwards restarts the history. A bad frame, stamp or instruction is
    /// rejected before it touches the history.
    pub fn decide(
        &mut self,
        frame: &Frame,
        instruction: &str,
        stamp_s: f64,
        decoding: Decoding,
    ) -> Result<Decision, PolicyError> {
        let pool = self.pool.clone();
        pool.install(|| self.decide_on_pool(frame, instruction, stamp_s, decoding))
    }

    fn decide_on_pool(
        &mut self,
        frame: &Frame,
        instruction: &str,
        stamp_s: f64,
        decoding: Decoding,
    ) -> Result<Decision, PolicyError> {
        let start = Instant::now();
        if !stamp_s.is_finite() {
            return Err(PolicyError::Stamp(stamp_s));
        }
        let ids = self.text.tokenize(instruction)?;
        let image = self.preprocess(frame)?;
        let preprocessed = Instant::now();
        let input = match &self.text_input {
            Some(input) if ids == self.instruction => input.clone(),
            // A new instruction: the only time the sentence encoder runs.
            _ => {
                let input = self.text.input(&ids, self.model.device())?;
                self.frames.clear();
                self.schedule.restart();
                self.instruction = ids.clone();
                self.text_input = Some(input.clone());
                input
            }
        };
        let admission = self.schedule.admit(stamp_s);
        if admission == Admission::Restarted {
            self.frames.clear();
            self.decoder_state.reset();
        }
        let retention = if admission.keeps_frame() { FrameRetention::Keep } else { FrameRetention::ThisStepOnly };
        let newest = StampedImage { stamp_s, image: image.clone() };
        let decision = match decoding {
            Decoding::Cached => self.decoder_state.decide(&self.model, &ids, &input, &image, retention, &self.masks)?,
            Decoding::Uncached => {
                let window: Vec<Tensor> = self.frames.window_with(newest.clone()).into_iter().map(|f| f.image).collect();
                let obs = ObservationBatch {
                    text: input,
                    text_valid: None,
                    frames: Tensor::stack(&window, 1)?, // [1, history, 3, S, S]
                };
                self.model.decode_uncached(&obs, &self.masks)?
            }
        };
        if retention == FrameRetention::Keep {
            self.frames.push(newest);
        }
        if let Some(dim) = decision.q.iter().position(|q| !q.is_finite()) {
            return Err(PolicyError::NonFinite { dim, name: self.space.names()[dim].clone() });
        }
        let command = self.space.command(&decision.bins)?;
        let done = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f32() * 1e3;
        Ok(Decision {
            command,
            bins: decision.bins,
            q: decision.q,
            expert_load: decision.load.fractions(),
            timing: Timing {
                preprocess_ms: ms(start, preprocessed),
                inference_ms: ms(preprocessed, done),
                total_ms: ms(start, done),
            },
        })
    }
}

/// A preprocessed frame of the history and its stamp.
#[derive(Debug, Clone)]
struct StampedImage {
    stamp_s: f64,
    /// [1, 3, S, S].
    image: Tensor,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, PolicyError> {
    let fail = |reason: String| PolicyError::Threads { threads, reason };
    if threads == 0 {
        return Err(fail("at least one thread is needed".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("moe_vla-infer-{i}"))
        .build()
        .map_err(|e| fail(e.to_string()))
}

pub fn read_config(path: &Path) -> Result<VlaConfig, PolicyError> {
    let err = |reason: String| PolicyError::Config { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let config: VlaConfig = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    config.validate().map_err(err)?;
    Ok(config)
}
