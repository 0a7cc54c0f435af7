//! Pure candle: tensors in, Q-values out. Knows nothing of ROS, image files or robots.
//!
//! The network follows GeRM (Song et al. 2024, <https://arxiv.org/abs/2403.13358>: a
//! mixture-of-experts transformer over instruction and frame tokens, one action dimension decoded
//! at a time as a Q-function over bins) and MoRE (Zhao et al. 2025,
//! <https://arxiv.org/abs/2503.08007>: LoRA experts, Q-learning from mixed-quality data); the
//! per-dimension Q decoding comes from Q-Transformer (Chebotar et al. 2023,
//! <https://arxiv.org/abs/2309.10150>).

pub mod behaviour;
pub mod config;
pub mod decode;
pub mod decoder;
pub mod device;
pub mod history;
pub mod kernels;
pub mod layers;
pub mod minilm;
pub mod moe;
pub mod text;
pub mod vision;
pub mod vla;
pub mod weights;

pub use config::{
    ActionSpaceConfig, DecoderKind, EncoderRef, ExpertAct, FeedForwardConfig, FeedForwardKind, PreprocessConfig, TextConfig,
    TextKind, VisionConfig, VisionKind, VlaConfig, WeightPrecision,
};
pub use decode::{masked_argmax, sigmoid, DecoderState, FrameTokenCache, GreedyAction, StreamingCache};
pub use decoder::{Decoder, FullDecoder, StreamingDecoder};
pub use device::{parse_device, DeviceError};
pub use history::{history_window, FrameRetention, HistoryRing};
pub use minilm::{mean_pool_normalised, Bert, BertConfig};
pub use moe::{DecoderRouting, ExpertLoad, LayerRouting};
pub use text::{TextEncoding, TextInput};
pub use vla::{is_instruction_weight, EncodedObservation, ObservationBatch, TrainOutput, VlaModel, INITIAL_Q_LOGIT};
pub use weights::{count_params, init_model, load_model, read_weights, save_weights, seeded_var_builder, ModelError, ParamCount};
