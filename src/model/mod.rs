//! Pure candle: tensors in, Q-values out. Knows nothing of ROS, image files or robots.

pub mod config;
pub mod decode;
pub mod layers;
pub mod moe;
pub mod text;
pub mod vision;
pub mod vla;
pub mod weights;

pub use config::{
    ActionSpaceConfig, ExpertAct, FeedForwardConfig, FeedForwardKind, PreprocessConfig, TextConfig, VisionConfig, VisionKind,
    VlaConfig,
};
pub use decode::{history_window, masked_argmax, sigmoid, FrameTokenCache, GreedyAction, HistoryRing};
pub use moe::ExpertLoad;
pub use text::TextEncoding;
pub use vla::{EncodedObservation, ObservationBatch, VlaModel, INITIAL_Q_LOGIT};
pub use weights::{count_params, init_model, load_model, read_weights, save_weights, ModelError, ParamCount};
