//! Training throughput: one gradient update (online forward and backward, two target forwards,
//! AdamW, EMA) on a batch of 32 random observations, for the tiny MoE and its dense twin.
//! Samples per second = 32 / time per update.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moe_vla::model::{ObservationBatch, VlaConfig};
use moe_vla::train::data::Batch;
use moe_vla::train::{Objective, TrainOptions, Trainer};

const BATCH: usize = 32;

fn batch(cfg: &VlaConfig) -> Batch {
    let dev = Device::Cpu;
    let s = cfg.image_size;
    let obs = || ObservationBatch {
        ids: Tensor::new(&[[2u32, 3, 4, 5, 6]], &dev).unwrap().repeat((BATCH, 1)).unwrap(),
        text_valid: None,
        frames: Tensor::randn(0f32, 1.0, (BATCH, cfg.history, 3, s, s), &dev).unwrap(),
    };
    let dims = cfg.action_dims();
    let bins: Vec<u32> = (0..BATCH * dims).map(|i| if i % dims == 0 { 0 } else { (i * 37 % 256) as u32 }).collect();
    Batch {
        obs: obs(),
        next: obs(),
        bins: Tensor::from_vec(bins, (BATCH, dims), &dev).unwrap(),
        reward: Tensor::zeros(BATCH, DType::F32, &dev).unwrap(),
        not_done: Tensor::ones(BATCH, DType::F32, &dev).unwrap(),
        mc_return: Tensor::zeros(BATCH, DType::F32, &dev).unwrap(),
    }
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_update");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for preset in ["tiny", "tiny-dense"] {
        let cfg = VlaConfig::preset(preset).expect("known preset");
        let data = batch(&cfg);
        for objective in [Objective::Q, Objective::Bc] {
            let opts = TrainOptions { objective, steps: 1_000_000, batch_size: BATCH, ..Default::default() };
            let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).expect("trainer");
            group.bench_function(format!("{preset}/{objective:?}"), |b| b.iter(|| trainer.update(&data).expect("update")));
        }
    }
    group.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);
