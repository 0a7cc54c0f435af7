//! Batch-1 decision latency of the cached and uncached argmax procedures (criterion).
//! `moe_vla bench` reports the same paths with percentiles.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use moe_vla::fixtures::{instruction_lines, random_policy, synthetic_frame, SAMPLE_INSTRUCTIONS};
use moe_vla::model::VlaConfig;
use moe_vla::policy::{Decoding, Frame, PixelEncoding, RawFrame};

fn decisions(c: &mut Criterion) {
    let instructions = instruction_lines(SAMPLE_INSTRUCTIONS);
    let frames: Vec<Vec<u8>> = (0..8).map(|t| synthetic_frame(640, 480, t)).collect();
    let mut group = c.benchmark_group("decision");
    group.sample_size(20);
    let cached = &[Decoding::Cached][..];
    let both = &[Decoding::Cached, Decoding::Uncached][..];
    // germ: streaming decoder; germ-full: the whole observation prefix every step (both bf16).
    for (preset, procedures) in [("tiny", both), ("tiny-streaming", both), ("germ", cached), ("germ-full", cached)] {
        let cfg = VlaConfig::preset(preset).expect("known preset");
        let mut policy = random_policy(cfg, &instructions, 0, &Device::Cpu).expect("random policy");
        // Frames one period apart: each joins the history, as on a camera at the model's rate.
        let period_s = policy.config().frame_period_s;
        for &decoding in procedures {
            let mut t = 0usize;
            group.bench_function(format!("{preset}/{decoding:?}"), |b| {
                b.iter(|| {
                    t += 1;
                    let frame = Frame::Raw(RawFrame::packed(640, 480, PixelEncoding::Rgb8, &frames[t % frames.len()]));
                    policy.decide(&frame, "go to the red ball", t as f64 * period_s, decoding).expect("decision")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
