#![allow(dead_code)]

use candle_core::Device;
use moe_vla::fixtures::{instruction_lines, random_policy, SAMPLE_INSTRUCTIONS};
use moe_vla::model::{FeedForwardKind, VisionKind, VlaConfig};
use moe_vla::policy::Policy;

/// A very small network of the tiny preset's shape, quick in debug test builds.
pub fn micro_config() -> VlaConfig {
    let mut cfg = VlaConfig::tiny();
    cfg.image_size = 32;
    cfg.history = 3;
    cfg.tokens_per_frame = 4;
    cfg.vision.channels = vec![8, 16];
    cfg.vision.token_learner_hidden = 16;
    cfg.text.layers = 1;
    cfg.text.ffn_hidden = 32;
    cfg.d_model = 32;
    cfg.layers = 2;
    cfg.heads = 4;
    cfg.ffn.experts = 4;
    cfg.ffn.hidden = 48;
    cfg
}

/// Every architecture variant the config can select.
pub fn variants() -> Vec<(&'static str, VlaConfig)> {
    let moe = micro_config();
    let mut lora = micro_config();
    lora.ffn.kind = FeedForwardKind::Lora;
    lora.ffn.lora_rank = 4;
    let mut dense = micro_config();
    dense.ffn.kind = FeedForwardKind::Dense;
    let mut patch = micro_config();
    patch.vision.kind = VisionKind::Patch;
    patch.vision.patch_size = 8;
    let mut swiglu = micro_config();
    swiglu.ffn.expert_act = moe_vla::model::ExpertAct::Swiglu;
    let mut streaming = micro_config();
    streaming.decoder = moe_vla::model::DecoderKind::Streaming;
    let mut streaming_bf16 = streaming.clone();
    streaming_bf16.decoder_weights = moe_vla::model::WeightPrecision::Bf16;
    let mut bf16 = micro_config();
    bf16.decoder_weights = moe_vla::model::WeightPrecision::Bf16;
    vec![
        ("moe", moe),
        ("lora", lora),
        ("dense", dense),
        ("patch", patch),
        ("swiglu", swiglu),
        ("streaming", streaming),
        ("streaming-bf16", streaming_bf16),
        ("bf16", bf16),
    ]
}

/// The stamp of frame `step` of a camera at the presets' frame period: every frame joins the
/// history, as every frame of the task world does.
pub fn period_stamp(step: u32) -> f64 {
    f64::from(step) * moe_vla::model::config::DEFAULT_FRAME_PERIOD_S
}

pub fn policy(cfg: VlaConfig, seed: u64) -> Policy {
    random_policy(cfg, &instruction_lines(SAMPLE_INSTRUCTIONS), seed, &Device::Cpu).unwrap()
}

/// A deterministic rgb8 picture with structure at every scale.
pub fn picture(width: u32, height: u32, seed: u32) -> Vec<u8> {
    moe_vla::fixtures::synthetic_frame(width, height, seed)
}
