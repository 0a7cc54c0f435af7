//! Training throughput: one gradient update (online forward and backward, two target forwards,
//! AdamW, EMA) on a batch of 64 random observations, for the tiny MoE and its dense twin, with
//! pixels through trainable encoders (`end_to_end`) and with the encoders frozen, their output
//! cached (`frozen_encoders`, most of a default training run). Samples per second = 64 / time per
//! update. Threads follow RAYON_NUM_THREADS (default: every core).

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moe_vla::model::{EncodedObservation, ObservationBatch, TextInput, VlaConfig};
use moe_vla::train::data::Batch;
use moe_vla::train::{Objective, Observations, TrainOptions, Trainer};

const BATCH: usize = 64;
const TEXT_TOKENS: usize = 8;

fn batch(cfg: &VlaConfig, encoded: bool) -> Batch {
    let dev = Device::Cpu;
    let s = cfg.image_size;
    let obs = || {
        if encoded {
            Observations::Encoded(EncodedObservation {
                text_tokens: Tensor::randn(0f32, 1.0, (BATCH, TEXT_TOKENS, cfg.d_model), &dev).unwrap(),
                text_valid: None,
                frames: Tensor::randn(0f32, 1.0, (BATCH, cfg.history, cfg.tokens_per_frame, cfg.d_model), &dev).unwrap(),
            })
        } else {
            Observations::Pixels(ObservationBatch {
                text: TextInput::Ids(Tensor::new(&[[2u32, 3, 4, 5, 6, 7, 8, 9]], &dev).unwrap().repeat((BATCH, 1)).unwrap()),
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
    let mut group = c.benchmark_group("train_update");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for preset in ["tiny", "tiny-dense"] {
        let cfg = VlaConfig::preset(preset).expect("known preset");
        for (phase, encoded) in [("frozen_encoders", true), ("end_to_end", false)] {
            let data = batch(&cfg, encoded);
            for objective in [Objective::Q, Objective::Bc] {
                let opts = TrainOptions { objective, steps: 1_000_000, batch_size: BATCH, ..Default::default() };
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
