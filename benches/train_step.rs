//! Training throughput: one gradient update (online forward and backward, two target forwards,
//! AdamW, EMA) on a batch of 64 random observations, for the shipped architecture (`default`:
//! `tiny-streaming` with the MiniLM-embedded instruction and 6 frames of history,
//! `config/tiny-streaming-history6.json`), the same with 3 frames (`history3`, models/history3's,
//! the former default), the tiny MoE and its dense twin, with
//! pixels through trainable encoders (`end_to_end`) and with the encoders frozen, their output
//! cached (`frozen_encoders`, most of a default training run). Samples per second = 64 / time per
//! update. Threads follow RAYON_NUM_THREADS (default: every core) and are used as `moe_vla train
//! --threads` uses them: each computes the gradient of one shard of the batch, kernels single-threaded.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use moe_vla::model::{EncodedObservation, ObservationBatch, TextInput, TextKind, VlaConfig};
use moe_vla::train::data::Batch;
use moe_vla::train::{Objective, Observations, TrainOptions, Trainer};

const BATCH: usize = 64;
/// Instruction tokens per sample: 8 word-level tokens; for MiniLM the most a model keeps
/// (`text.max_tokens`, 16 for the default), which a batch's longest instruction usually reaches.
fn text_tokens(cfg: &VlaConfig) -> usize {
    match cfg.text.kind {
        TextKind::WordLevel => 8,
        TextKind::Minilm => cfg.text.max_tokens,
    }
}

fn batch(cfg: &VlaConfig, encoded: bool) -> Batch {
    let dev = Device::Cpu;
    let s = cfg.image_size;
    let obs = || {
        if encoded {
            Observations::Encoded(EncodedObservation {
                text_tokens: Tensor::randn(0f32, 1.0, (BATCH, text_tokens(cfg), cfg.d_model), &dev).unwrap(),
                text_valid: None,
                frames: Tensor::randn(0f32, 1.0, (BATCH, cfg.history, cfg.tokens_per_frame, cfg.d_model), &dev).unwrap(),
            })
        } else {
            let text = match cfg.text.kind {
                TextKind::WordLevel => {
                    TextInput::Ids(Tensor::new(&[[2u32, 3, 4, 5, 6, 7, 8, 9]], &dev).unwrap().repeat((BATCH, 1)).unwrap())
                }
                TextKind::Minilm => {
                    let width = cfg.text.encoder.as_ref().expect("minilm config names its encoder").width;
                    TextInput::Embedded {
                        tokens: Tensor::randn(0f32, 1.0, (BATCH, text_tokens(cfg), width), &dev).unwrap(),
                        pooled: Tensor::randn(0f32, 1.0, (BATCH, width), &dev).unwrap(),
                    }
                }
            };
            Observations::Pixels(ObservationBatch {
                text,
                text_valid: None,
                frames: Tensor::randn(0f32, 1.0, (BATCH, cfg.history, 3, s, s), &dev).unwrap(),
            })
        }
    };
    let dims = cfg.action_dims();
    let bins: Vec<u32> = (0..BATCH * dims).map(|i| if i % dims == 0 { 0 } else { (i * 37 % 256) as u32 }).collect();
    Batch {
        obs: obs(),
        next: obs(),
        bins: Tensor::from_vec(bins, (BATCH, dims), &dev).unwrap(),
        return_n: Tensor::zeros(BATCH, DType::F32, &dev).unwrap(),
        discount: Tensor::full(0.96f32, BATCH, &dev).unwrap(),
        mc_return: Tensor::zeros(BATCH, DType::F32, &dev).unwrap(),
    }
}

fn updates(c: &mut Criterion) {
    moe_vla::train::keep_freed_memory();
    let threads = moe_vla::train::training_threads(None);
    std::env::set_var("RAYON_NUM_THREADS", "1");
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("rayon's pool is not yet built");
    let mut group = c.benchmark_group("train_update");
    group.sample_size(10);
    // Each update takes a second or more: the same few iterations per sample, not 1..10.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH as u64));
    let history3 = VlaConfig::preset("tiny-streaming").expect("known preset").with_text(TextKind::Minilm);
    // models/default: config/tiny-streaming-history6.json, the preset with 6 frames of history.
    let shipped = VlaConfig { history: 6, ..history3.clone() };
    let tiny = |name| VlaConfig::preset(name).expect("known preset");
    for (preset, cfg) in
        [("default", shipped), ("history3", history3), ("tiny", tiny("tiny")), ("tiny-dense", tiny("tiny-dense"))]
    {
        for (phase, encoded) in [("frozen_encoders", true), ("end_to_end", false)] {
            let data = batch(&cfg, encoded);
            for objective in [Objective::Q, Objective::Bc] {
                let opts = TrainOptions { objective, steps: 1_000_000, batch_size: BATCH, shards: threads, ..Default::default() };
                let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).expect("trainer");
                group.bench_function(format!("{preset}/{phase}/{objective:?}"), |b| {
                    b.iter(|| trainer.update(&data).expect("update"))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);
