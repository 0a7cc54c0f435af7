//! Architecture description stored as `config.json` in a model folder.

use serde::{Deserialize, Serialize};

/// How a frame becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionKind {
    /// Strided 3x3 convolutions, each block FiLM-conditioned on the instruction (RT-1 / GeRM),
    /// followed by TokenLearner.
    FilmConv,
    /// Non-overlapping patch embedding (ViT) with FiLM on the patch tokens, followed by TokenLearner.
    Patch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub kind: VisionKind,
    /// Output channels of each stride-2 conv block (`film_conv`).
    #[serde(default)]
    pub channels: Vec<usize>,
    /// Patch side in pixels (`patch`).
    #[serde(default)]
    pub patch_size: usize,
    /// Hidden width of the TokenLearner attention MLP.
    pub token_learner_hidden: usize,
}

/// How the instruction becomes the decoder's text tokens and the FiLM vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    /// A word-level tokenizer trained on the task's instructions and a small trained encoder.
    #[default]
    WordLevel,
    /// A frozen pretrained sentence encoder (`text.encoder`, e.g. all-MiniLM-L6-v2) whose token
    /// states and sentence embedding are projected to `d_model` by trained linear maps.
    Minilm,
}

impl TextKind {
    pub const NAMES: &'static [&'static str] = &["word_level", "minilm"];
}

impl std::str::FromStr for TextKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "word_level" | "word-level" => Ok(Self::WordLevel),
            "minilm" => Ok(Self::Minilm),
            _ => Err(format!("unknown text encoder kind '{s}' (known: {})", Self::NAMES.join(", "))),
        }
    }
}

/// A pretrained sentence encoder a model was trained with, by name and content. The encoder is not
/// part of the model folder: it is installed once (scripts/setup.sh) and found by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderRef {
    /// The encoder's folder name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// Width of its token states and sentence embedding.
    pub width: usize,
    /// SHA-256 of its `model.safetensors` and `tokenizer.json`, checked when it loads.
    pub weights_sha256: String,
    pub tokenizer_sha256: String,
}

/// The checksums scripts/setup.sh verifies the downloaded all-MiniLM-L6-v2 against.
const MINILM_SHA256: &str = include_str!("../../encoders/all-MiniLM-L6-v2.sha256");

impl EncoderRef {
    pub const MINILM_L6_V2: &'static str = "all-MiniLM-L6-v2";

    /// sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0): BERT, 6 layers x 384.
    pub fn all_minilm_l6_v2() -> Self {
        let sha = |file: &str| {
            MINILM_SHA256
                .lines()
                .find_map(|l| l.split_once("  ").filter(|(_, f)| *f == file).map(|(h, _)| h.to_string()))
                .expect("the checksum file lists every encoder file")
        };
        Self {
            name: Self::MINILM_L6_V2.into(),
            width: 384,
            weights_sha256: sha("model.safetensors"),
            tokenizer_sha256: sha("tokenizer.json"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Absent in models written before sentence encoders existed: those are `word_level`.
    #[serde(default)]
    pub kind: TextKind,
    /// Word-level vocabulary (`word_level`; the sentence encoder brings its own).
    #[serde(default)]
    pub vocab_size: usize,
    /// Instructions reach the decoder as at most this many tokens.
    pub max_tokens: usize,
    /// Bidirectional encoder layers (width `d_model`, dense feed-forward; `word_level`).
    #[serde(default)]
    pub layers: usize,
    #[serde(default)]
    pub ffn_hidden: usize,
    /// The frozen sentence encoder (`minilm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderRef>,
}

impl TextConfig {
    /// all-MiniLM-L6-v2's first `max_tokens` token states become the decoder's text tokens.
    pub fn minilm(max_tokens: usize) -> Self {
        Self {
            kind: TextKind::Minilm,
            vocab_size: 0,
            max_tokens,
            layers: 0,
            ffn_hidden: 0,
            encoder: Some(EncoderRef::all_minilm_l6_v2()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedForwardKind {
    Dense,
    Moe,
    Lora,
}

/// The expert's gated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpertAct {
    /// GeRM's released expert: `w2(silu(w1(x) * w3(x)))`.
    Germ,
    /// The usual SwiGLU: `w2(silu(w1(x)) * w3(x))`.
    Swiglu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedForwardConfig {
    pub kind: FeedForwardKind,
    /// Number of experts (`moe`, `lora`).
    #[serde(default = "one")]
    pub experts: usize,
    /// Experts run per token.
    #[serde(default = "one")]
    pub top_k: usize,
    /// Hidden width of one expert (or of the dense / shared feed-forward).
    pub hidden: usize,
    pub expert_act: ExpertAct,
    /// LoRA rank of each adapter (`lora`).
    #[serde(default)]
    pub lora_rank: usize,
}

fn one() -> usize {
    1
}

/// The discretised action space, as data: names, bin count and physical ranges per dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSpaceConfig {
    pub names: Vec<String>,
    /// Bins per dimension (the same for every dimension).
    pub bins: usize,
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    /// Per dimension, the inclusive bin ranges the training data supports. Training maximises and
    /// inference chooses only over these (a max over bins the data never visits is an optimistic
    /// guess); absent, every bin is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<Vec<Vec<[u32; 2]>>>,
}

impl ActionSpaceConfig {
    /// Which of dimension `dim`'s bins the data supports: every bin where `supported` is absent.
    /// A range that is reversed or reaches past `bins` is the error.
    pub fn supported_mask(&self, dim: usize) -> std::result::Result<Vec<bool>, [u32; 2]> {
        let Some(ranges) = self.supported.as_ref().and_then(|s| s.get(dim)) else {
            return Ok(vec![true; self.bins]);
        };
        let mut mask = vec![false; self.bins];
        for &[lo, hi] in ranges {
            if lo > hi || hi as usize >= self.bins {
                return Err([lo, hi]);
            }
            mask[lo as usize..=hi as usize].fill(true);
        }
        Ok(mask)
    }
}

/// How the Q head and the action-token embedding treat the action dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionHeadKind {
    /// One Q-head row per bin and one bin embedding, shared by every dimension.
    Shared,
    /// Every dimension has its own Q head and bin embedding, so the bin statistics of one
    /// dimension do not leak into another.
    PerDimension,
}

fn shared_head() -> ActionHeadKind {
    ActionHeadKind::Shared
}

/// Which observation tokens the decoder lets attend to which.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// Every observation token attends to every other; a frame's slot in the history window is
    /// added to its tokens, so the whole observation prefix is recomputed at every control step.
    #[default]
    Full,
    /// Frame-causal: instruction tokens attend to themselves, each frame's tokens to the
    /// instruction and their own frame, and the action tokens (after a learned start token) to
    /// everything. A frame's age enters only as a learned per-head bias on the action tokens'
    /// attention to it, so its keys and values never change as it ages: a control step computes
    /// the new frame's tokens only.
    Streaming,
}

/// How the decoder's attention and feed-forward weights are held at inference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightPrecision {
    #[default]
    F32,
    /// Rounded to bf16 when the policy loads; single-token steps then stream half the bytes.
    /// Training keeps f32.
    Bf16,
}

/// Image normalisation applied after resizing: `(x / 255 - mean) / std` per RGB channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self { mean: [0.5; 3], std: [0.25; 3] }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlaConfig {
    /// Square side the frames are resized to.
    pub image_size: usize,
    /// Frames per observation, newest included (GeRM: 6).
    pub history: usize,
    /// Seconds between the frames of an observation, and between training steps: the period the
    /// model was trained at. The policy's history keeps one frame per period by stamp, whatever
    /// the camera's rate, and training resamples faster recordings to it. Absent in models written
    /// before it was recorded: those were trained on `moe_vla collect` bags, at
    /// `DEFAULT_FRAME_PERIOD_S`.
    #[serde(default = "default_frame_period_s")]
    pub frame_period_s: f64,
    pub tokens_per_frame: usize,
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: FeedForwardConfig,
    /// Absent in models written before the streaming decoder existed: those are `full`.
    #[serde(default)]
    pub decoder: DecoderKind,
    /// Absent in models written before bf16 decoding existed: those are `f32`.
    #[serde(default)]
    pub decoder_weights: WeightPrecision,
    /// Absent in models written before per-dimension heads existed: those are `shared`.
    #[serde(default = "shared_head")]
    pub action_head: ActionHeadKind,
    /// Discrete BCQ: a behaviour-cloning head beside the Q head, and a bin may win an argmax (in
    /// Bellman targets and at inference) only where the behaviour head finds it at least this
    /// share as likely as the dimension's likeliest supported bin. Absent: no behaviour head, the
    /// argmax runs over every supported bin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_filter: Option<f64>,
    pub actions: ActionSpaceConfig,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    /// False for a randomly initialised model (`moe_vla init`), which must never drive a robot
    /// unlabelled.
    #[serde(default = "yes")]
    pub trained: bool,
}

fn yes() -> bool {
    true
}

/// The frame period of the presets and of configs that do not record one: the task world's
/// control period (`sim::CONTROL_PERIOD_NS`; a test holds the two equal), one step per frame of
/// the bags `moe_vla collect` writes.
pub const DEFAULT_FRAME_PERIOD_S: f64 = 0.2;

fn default_frame_period_s() -> f64 {
    DEFAULT_FRAME_PERIOD_S
}

fn default_norm_eps() -> f64 {
    1e-5
}

/// GeRM's action space (the ranges GeRM's released `ranges.npy` holds).
pub fn quadruped_action_space() -> ActionSpaceConfig {
    let spec: [(&str, f32, f32); 12] = [
        ("terminate", 0.0, 1.0),
        ("x_vel", -0.81, 3.10),
        ("y_vel", -0.90, 0.89),
        ("yaw_vel", -1.45, 1.60),
        ("body_height", -0.65, 0.10),
        ("step_frequency", 2.0, 4.0),
        ("gait_phase", 0.0, 1.0),
        ("gait_offset", 0.0, 1.0),
        ("gait_bound", 0.0, 1.0),
        ("footswing_height", 0.08, 0.18),
        ("pitch", -0.8, 0.0),
        ("stance_width", 0.10, 0.55),
    ];
    ActionSpaceConfig {
        names: spec.iter().map(|s| s.0.to_string()).collect(),
        bins: 256,
        low: spec.iter().map(|s| s.1).collect(),
        high: spec.iter().map(|s| s.2).collect(),
        supported: None,
    }
}

impl VlaConfig {
    /// The default-model scale: a few million parameters, fast on 2 CPU cores.
    pub fn tiny() -> Self {
        Self {
            image_size: 64,
            history: 3,
            frame_period_s: DEFAULT_FRAME_PERIOD_S,
            tokens_per_frame: 8,
            vision: VisionConfig {
                kind: VisionKind::FilmConv,
                channels: vec![16, 32, 64, 128],
                patch_size: 0,
                token_learner_hidden: 64,
            },
            text: TextConfig {
                kind: TextKind::WordLevel,
                vocab_size: 512,
                max_tokens: 16,
                layers: 1,
                ffn_hidden: 256,
                encoder: None,
            },
            d_model: 128,
            layers: 4,
            heads: 4,
            decoder: DecoderKind::Full,
            decoder_weights: WeightPrecision::F32,
            ffn: FeedForwardConfig {
                kind: FeedForwardKind::Moe,
                experts: 8,
                top_k: 2,
                hidden: 256,
                expert_act: ExpertAct::Germ,
                lora_rank: 0,
            },
            action_head: ActionHeadKind::PerDimension,
            behaviour_filter: None,
            actions: quadruped_action_space(),
            preprocess: PreprocessConfig::default(),
            norm_eps: default_norm_eps(),
            trained: false,
        }
    }

    /// GeRM's scale: 8 layers, width 256, 8 heads, 8 experts top-2 (hidden 1024), history 6,
    /// 8 tokens per frame, 12 x 256 actions.
    pub fn germ() -> Self {
        Self {
            image_size: 128,
            history: 6,
            frame_period_s: DEFAULT_FRAME_PERIOD_S,
            tokens_per_frame: 8,
            vision: VisionConfig {
                kind: VisionKind::FilmConv,
                channels: vec![32, 64, 128, 256, 256],
                patch_size: 0,
                token_learner_hidden: 128,
            },
            text: TextConfig {
                kind: TextKind::WordLevel,
                vocab_size: 1024,
                max_tokens: 16,
                layers: 2,
                ffn_hidden: 512,
                encoder: None,
            },
            d_model: 256,
            layers: 8,
            heads: 8,
            decoder: DecoderKind::Streaming,
            decoder_weights: WeightPrecision::Bf16,
            ffn: FeedForwardConfig {
                kind: FeedForwardKind::Moe,
                experts: 8,
                top_k: 2,
                hidden: 1024,
                expert_act: ExpertAct::Germ,
                lora_rank: 0,
            },
            action_head: ActionHeadKind::PerDimension,
            behaviour_filter: None,
            actions: quadruped_action_space(),
            preprocess: PreprocessConfig::default(),
            norm_eps: default_norm_eps(),
            trained: false,
        }
    }

    /// `tiny` with a dense feed-forward of the same active size (top_k x the expert width): the
    /// baseline for "a sparse MoE beats a dense network of the same active size".
    pub fn tiny_dense() -> Self {
        let mut cfg = Self::tiny();
        cfg.ffn = FeedForwardConfig {
            kind: FeedForwardKind::Dense,
            experts: 1,
            top_k: 1,
            hidden: cfg.ffn.top_k * cfg.ffn.hidden,
            expert_act: cfg.ffn.expert_act,
            lora_rank: 0,
        };
        cfg
    }

    /// This config with instructions through `kind`, keeping the number of decoder text tokens:
    /// unchanged when it already is that kind, else `tiny`'s word-level encoder or the frozen
    /// all-MiniLM-L6-v2.
    pub fn with_text(mut self, kind: TextKind) -> Self {
        if self.text.kind != kind {
            let max_tokens = self.text.max_tokens;
            self.text = match kind {
                TextKind::WordLevel => TextConfig { max_tokens, ..Self::tiny().text },
                TextKind::Minilm => TextConfig::minilm(max_tokens),
            };
        }
        self
    }

    /// `cfg` with the other decoder kind.
    fn with_decoder(mut self, decoder: DecoderKind) -> Self {
        self.decoder = decoder;
        self
    }

    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "tiny-dense" => Some(Self::tiny_dense()),
            "tiny-streaming" => Some(Self::tiny().with_decoder(DecoderKind::Streaming)),
            "tiny-minilm" => Some(Self::tiny().with_text(TextKind::Minilm)),
            "germ" => Some(Self::germ()),
            "germ-full" => Some(Self::germ().with_decoder(DecoderKind::Full)),
            _ => None,
        }
    }

    pub const PRESETS: &'static [&'static str] = &["tiny", "tiny-dense", "tiny-streaming", "tiny-minilm", "germ", "germ-full"];

    /// Learned frame-token position sets: one per history slot (`full`), or one shared by every
    /// frame whatever its age (`streaming`).
    pub fn frame_position_slots(&self) -> usize {
        match self.decoder {
            DecoderKind::Full => self.history,
            DecoderKind::Streaming => 1,
        }
    }

    pub fn action_dims(&self) -> usize {
        self.actions.names.len()
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }

    /// Frame tokens in one observation.
    pub fn frame_tokens(&self) -> usize {
        self.history * self.tokens_per_frame
    }

    /// Checks internal consistency; the message names the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(m);
        if self.d_model == 0 || self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return fail(format!("d_model {} must be a positive multiple of heads {}", self.d_model, self.heads));
        }
        if self.image_size == 0 || self.history == 0 || self.tokens_per_frame == 0 {
            return fail("image_size, history and tokens_per_frame must be positive".into());
        }
        if !(self.frame_period_s.is_finite() && self.frame_period_s > 0.0) {
            return fail(format!("frame_period_s {} must be a positive number of seconds", self.frame_period_s));
        }
        if self.text.max_tokens == 0 {
            return fail("text.max_tokens must be positive".into());
        }
        match (self.text.kind, &self.text.encoder) {
            (TextKind::WordLevel, _) if self.text.vocab_size < 3 => {
                return fail("text.vocab_size must be at least 3".into());
            }
            (TextKind::WordLevel, Some(_)) => return fail("text.encoder is only for kind minilm".into()),
            (TextKind::Minilm, None) => return fail("text.kind minilm needs text.encoder (name, width, checksums)".into()),
            (TextKind::Minilm, Some(e)) => {
                let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
                if e.name.is_empty() || e.width == 0 || !hex(&e.weights_sha256) || !hex(&e.tokenizer_sha256) {
                    return fail("text.encoder needs a name, a positive width and two SHA-256 checksums".into());
                }
            }
            (TextKind::WordLevel, None) => {}
        }
        match self.vision.kind {
            VisionKind::FilmConv => {
                if self.vision.channels.is_empty() {
                    return fail("vision.channels must not be empty for film_conv".into());
                }
                if self.image_size >> self.vision.channels.len() == 0 {
                    return fail(format!(
                        "image_size {} is too small for {} stride-2 blocks",
                        self.image_size,
                        self.vision.channels.len()
                    ));
                }
            }
            VisionKind::Patch => {
                let p = self.vision.patch_size;
                if p == 0 || !self.image_size.is_multiple_of(p) {
                    return fail(format!("vision.patch_size {p} must divide image_size {}", self.image_size));
                }
            }
        }
        let f = &self.ffn;
        if f.hidden == 0 {
            return fail("ffn.hidden must be positive".into());
        }
        if f.kind != FeedForwardKind::Dense && (f.experts == 0 || f.top_k == 0 || f.top_k > f.experts) {
            return fail(format!("ffn.top_k {} must be in 1..=experts ({})", f.top_k, f.experts));
        }
        if f.kind == FeedForwardKind::Lora && f.lora_rank == 0 {
            return fail("ffn.lora_rank must be positive for lora".into());
        }
        let a = &self.actions;
        let n = a.names.len();
        if n == 0 || a.bins < 2 {
            return fail("the action space needs at least one dimension and two bins".into());
        }
        if a.low.len() != n || a.high.len() != n {
            return fail(format!("actions: {} names but {} lows and {} highs", n, a.low.len(), a.high.len()));
        }
        for (i, (lo, hi)) in a.low.iter().zip(&a.high).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return fail(format!("actions: dimension {} ({}) has range [{lo}, {hi}]", i, a.names[i]));
            }
        }
        if let Some(supported) = &a.supported {
            if supported.len() != n {
                return fail(format!("actions.supported has {} entries for {n} dimensions", supported.len()));
            }
            for (i, ranges) in supported.iter().enumerate() {
                let bad = ranges.is_empty() || a.supported_mask(i).is_err();
                if bad {
                    return fail(format!(
                        "actions.supported of dimension {i} ({}) must be non-empty ranges [lo, hi] of bins below {}",
                        a.names[i], a.bins
                    ));
                }
            }
        }
        if let Some(threshold) = self.behaviour_filter {
            if !(threshold > 0.0 && threshold <= 1.0) {
                return fail(format!("behaviour_filter {threshold} must be in (0, 1]"));
            }
        }
        if self.preprocess.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return fail("preprocess.std must be positive".into());
        }
        Ok(())
    }
}
