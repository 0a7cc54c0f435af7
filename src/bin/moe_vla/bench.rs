//! `moe_vla bench`: batch-1 decision latency, cached and uncached decoding.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use moe_vla::control::nearest_rank;
use moe_vla::fixtures::{instruction_lines, random_policy, synthetic_frame, SAMPLE_INSTRUCTIONS};
use moe_vla::policy::{Decoding, Frame, PixelEncoding, Policy, RawFrame};

use crate::init::preset;

#[derive(Args)]
pub struct BenchArgs {
    /// A model folder; or use --preset for random weights.
    model_dir: Option<PathBuf>,
    #[arg(long, conflicts_with = "model_dir")]
    preset: Option<String>,
    /// CPU threads for the tensor kernels (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed decisions per procedure, after warm-up.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Camera frame fed to each decision (rgb8), as WIDTHxHEIGHT.
    #[arg(long, default_value = "640x480")]
    frame: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Time only the cached procedure (the uncached one is slow on large models).
    #[arg(long)]
    skip_uncached: bool,
}

fn parse_frame_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s.split_once('x').context("--frame must look like 640x480")?;
    Ok((w.parse()?, h.parse()?))
}

/// Percentiles of latency samples, in milliseconds.
struct Latency {
    median: f64,
    p95: f64,
    p99: f64,
}

impl Latency {
    fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q| nearest_rank(samples, q);
        Self { median: at(0.5), p95: at(0.95), p99: at(0.99) }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    let device = Device::Cpu;
    let loading = Instant::now();
    let mut policy = match (&args.model_dir, &args.preset) {
        (Some(dir), None) => Policy::load(dir, &device)?,
        (None, Some(name)) => random_policy(preset(name)?, &instruction_lines(SAMPLE_INSTRUCTIONS), 0, &device)?,
        _ => bail!("give a model folder or --preset"),
    };
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    if let Some(threads) = args.threads {
        policy.set_threads(threads)?;
    }
    let threads = policy.threads();
    let params = policy.params();
    let (w, h) = parse_frame_size(&args.frame)?;
    let frames: Vec<Vec<u8>> = (0..8).map(|t| synthetic_frame(w, h, t)).collect();
    let instruction = "go to the red ball";
    // Frames one period apart: each joins the history, as on a camera at the model's rate.
    let period_s = policy.config().frame_period_s;

    let mut run = |decoding: Decoding, runs: usize| -> Result<(Vec<f64>, Vec<f64>)> {
        policy.reset();
        let (mut total, mut preprocess) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for i in 0..args.warmup + runs {
            let frame = Frame::Raw(RawFrame::packed(w, h, PixelEncoding::Rgb8, &frames[i % frames.len()]));
            let start = Instant::now();
            let out = policy.decide(&frame, instruction, i as f64 * period_s, decoding)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if i >= args.warmup {
                total.push(ms);
                preprocess.push(out.timing.preprocess_ms as f64);
            }
        }
        Ok((total, preprocess))
    };
    let (mut cached, mut pre) = run(Decoding::Cached, args.runs)?;
    let cached = Latency::of(&mut cached);
    let preprocess = Latency::of(&mut pre);
    let uncached = if args.skip_uncached { None } else { Some(Latency::of(&mut run(Decoding::Uncached, args.runs)?.0)) };
    // The first decision under a new instruction also encodes it (a sentence encoder runs there
    // and nowhere else): every decision here follows an instruction change.
    let instructions = instruction_lines(SAMPLE_INSTRUCTIONS);
    let mut changes: Vec<f64> = (0..args.runs.min(50))
        .map(|i| {
            let frame = Frame::Raw(RawFrame::packed(w, h, PixelEncoding::Rgb8, &frames[i % frames.len()]));
            let start = Instant::now();
            policy.decide(&frame, &instructions[i % instructions.len()], i as f64 * period_s, Decoding::Cached)?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    let changed = Latency::of(&mut changes);
    let mut report = serde_json::json!({
        "model": policy.model_id(),
        "params_total": params.total,
        "params_active_per_token": params.active_per_token,
        "threads": threads,
        "runs": args.runs,
        "frame": format!("{w}x{h} rgb8"),
        "load_ms": load_ms,
        "preprocess_median_ms": preprocess.median,
        "new_instruction_median_ms": changed.median,
        "cached_median_ms": cached.median,
        "cached_p95_ms": cached.p95,
        "cached_p99_ms": cached.p99,
    });
    if let Some(u) = &uncached {
        report["uncached_median_ms"] = u.median.into();
        report["uncached_p95_ms"] = u.p95.into();
        report["uncached_p99_ms"] = u.p99.into();
        report["speedup_median"] = (u.median / cached.median).into();
    }
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "model {} | {} parameters, {} active per token | {} threads | {} runs | {}x{} rgb8 frames",
        policy.model_id(),
        params.total,
        params.active_per_token,
        threads,
        args.runs,
        w,
        h
    );
    println!("{:<28} {:>10} {:>10} {:>10}", "decision latency (ms)", "median", "p95", "p99");
    println!("{:<28} {:>10.2} {:>10.2} {:>10.2}", "cached (KV + frame tokens)", cached.median, cached.p95, cached.p99);
    if let Some(u) = &uncached {
        println!("{:<28} {:>10.2} {:>10.2} {:>10.2}", "uncached (GeRM procedure)", u.median, u.p95, u.p99);
        println!("speed-up {:.1}x", u.median / cached.median);
    }
    println!("{:<28} {:>10.2} {:>10.2} {:>10.2}", "cached, new instruction", changed.median, changed.p95, changed.p99);
    println!("preprocessing median {:.2} ms (included above); model loaded in {load_ms:.0} ms", preprocess.median);
    Ok(())
}
