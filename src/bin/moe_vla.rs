//! `moe_vla`: create, inspect and benchmark models.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};

use moe_vla::action::ActionSpace;
use moe_vla::bench::{instruction_lines, random_policy, synthetic_frame, SAMPLE_INSTRUCTIONS};
use moe_vla::model::{count_params, init_model, save_weights, ParamCount, VlaConfig};
use moe_vla::policy::tokenize::train_word_level;
use moe_vla::policy::{Decoding, Frame, PixelEncoding, Policy, RawFrame, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

#[derive(Parser)]
#[command(name = "moe_vla", version, about = "Mixture-of-experts VLA Q-network for quadrupeds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialised model folder (for tests and as a training start; never a
    /// model to drive a robot).
    Init(InitArgs),
    /// Parameter counts, action space and architecture of a model folder.
    Info {
        model_dir: PathBuf,
    },
    /// Batch-1 decision latency, cached and uncached decoding.
    Bench(BenchArgs),
    /// What the policy decides for a picture (png or jpeg) and an instruction: what the node
    /// would command for the same camera frame.
    Decide(DecideArgs),
}

#[derive(Args)]
struct DecideArgs {
    model_dir: PathBuf,
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    instruction: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Architecture preset: tiny or germ.
    #[arg(long)]
    preset: String,
    /// Instruction list (one per line, '#' comments) the tokenizer is trained on.
    #[arg(long)]
    instructions: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace model files already in OUT.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct BenchArgs {
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

fn main() -> Result<()> {
    // candle splits even batch-1 matrix products across threads, which costs more than it gains
    // here; parallelism comes from the policy's own pool (experts run side by side) instead.
    // Set before any thread exists; an explicit RAYON_NUM_THREADS is respected.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Init(args) => init(args),
        Command::Info { model_dir } => info(&model_dir),
        Command::Bench(args) => bench(args),
        Command::Decide(args) => decide(args),
    }
}

fn preset(name: &str) -> Result<VlaConfig> {
    VlaConfig::preset(name)
        .with_context(|| format!("unknown preset '{name}' (known: {})", VlaConfig::PRESETS.join(", ")))
}

fn init(args: InitArgs) -> Result<()> {
    let mut cfg = preset(&args.preset)?;
    let text = std::fs::read_to_string(&args.instructions)
        .with_context(|| format!("cannot read {}", args.instructions.display()))?;
    let instructions = instruction_lines(&text);
    if instructions.is_empty() {
        bail!("{} holds no instructions", args.instructions.display());
    }
    let files = [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE];
    if !args.force && files.iter().any(|f| args.out.join(f).exists()) {
        bail!("{} already holds a model; pass --force to replace it", args.out.display());
    }
    let tokenizer = train_word_level(instructions.iter(), cfg.text.vocab_size)?;
    cfg.text.vocab_size = tokenizer.get_vocab_size(true);
    cfg.trained = false;
    let (_, tensors) = init_model(&cfg, args.seed, &Device::Cpu)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    std::fs::write(args.out.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg)? + "\n")?;
    save_weights(&tensors, &args.out.join(WEIGHTS_FILE))?;
    tokenizer
        .save(args.out.join(TOKENIZER_FILE), true)
        .map_err(|e| anyhow::anyhow!("cannot write the tokenizer: {e}"))?;
    let params = count_params(&cfg, tensors.iter());
    println!(
        "wrote an UNTRAINED {} model to {} ({} parameters, vocabulary {} from {} instructions)",
        args.preset,
        args.out.display(),
        params.total,
        cfg.text.vocab_size,
        instructions.len()
    );
    Ok(())
}

fn info(dir: &Path) -> Result<()> {
    // Loading the policy checks that weights, config and tokenizer agree.
    let policy = Policy::load(dir, &Device::Cpu)?;
    print!("{}", describe(policy.config(), policy.params()));
    Ok(())
}

fn decide(args: DecideArgs) -> Result<()> {
    let mut policy = Policy::load(&args.model_dir, &Device::Cpu)?;
    let bytes = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let out = policy.decide(&Frame::Compressed(&bytes), &args.instruction, Decoding::Cached)?;
    let names = policy.action_space().names();
    if args.json {
        let (t, g) = (out.command.twist, out.command.gait);
        let json = serde_json::json!({
            "model": policy.model_id(),
            "trained": policy.config().trained,
            "names": names,
            "bins": out.bins,
            "q": out.q,
            "values": out.command.values,
            "terminate": out.command.terminate,
            "twist": { "x_vel": t.x_vel, "y_vel": t.y_vel, "yaw_vel": t.yaw_vel },
            "gait": {
                "body_height": g.body_height,
                "step_frequency": g.step_frequency,
                "phase_offsets": g.phase_offsets,
                "footswing_height": g.footswing_height,
                "pitch": g.pitch,
                "stance_width": g.stance_width,
            },
        });
        println!("{json}");
        return Ok(());
    }
    if !policy.config().trained {
        println!("UNTRAINED model: these commands are meaningless");
    }
    println!("{:<18} {:>5} {:>10} {:>7}", "dimension", "bin", "value", "Q");
    for (i, name) in names.iter().enumerate() {
        println!("{name:<18} {:>5} {:>10.4} {:>7.4}", out.bins[i], out.command.values[i], out.q[i]);
    }
    Ok(())
}

fn describe(cfg: &VlaConfig, params: ParamCount) -> String {
    let f = &cfg.ffn;
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("status               {}", if cfg.trained { "trained" } else { "UNTRAINED (random weights)" }));
    line(format!("parameters total     {}", params.total));
    line(format!("active per token     {}", params.active_per_token));
    line(format!(
        "vision               {:?}, {}x{} input, history {}, {} tokens per frame",
        cfg.vision.kind, cfg.image_size, cfg.image_size, cfg.history, cfg.tokens_per_frame
    ));
    line(format!(
        "text                 vocabulary {}, up to {} tokens, {} layers",
        cfg.text.vocab_size, cfg.text.max_tokens, cfg.text.layers
    ));
    line(format!("decoder              {} layers, width {}, {} heads", cfg.layers, cfg.d_model, cfg.heads));
    line(format!(
        "feed-forward         {:?}: {} experts, top-{}, hidden {}, expert {:?}{}",
        f.kind,
        f.experts,
        f.top_k,
        f.hidden,
        f.expert_act,
        if f.lora_rank > 0 { format!(", LoRA rank {}", f.lora_rank) } else { String::new() }
    ));
    line(format!("action space         {} dimensions x {} bins", cfg.action_dims(), cfg.actions.bins));
    line(format!("  {:>2}  {:<18} {:>8} {:>8} {:>10}", "#", "name", "low", "high", "bin width"));
    if let Ok(space) = ActionSpace::new(&cfg.actions) {
        for (i, name) in space.names().iter().enumerate() {
            let (lo, hi) = space.range(i);
            line(format!("  {i:>2}  {name:<18} {lo:>8.3} {hi:>8.3} {:>10.5}", space.bin_width(i)));
        }
    }
    s
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
        let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        Self { median: at(0.5), p95: at(0.95), p99: at(0.99) }
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    let device = Device::Cpu;
    let mut policy = match (&args.model_dir, &args.preset) {
        (Some(dir), None) => Policy::load(dir, &device)?,
        (None, Some(name)) => random_policy(preset(name)?, &instruction_lines(SAMPLE_INSTRUCTIONS), 0, &device)?,
        _ => bail!("give a model folder or --preset"),
    };
    if let Some(threads) = args.threads {
        policy.set_threads(threads)?;
    }
    let threads = policy.threads();
    let params = policy.params();
    let (w, h) = parse_frame_size(&args.frame)?;
    let frames: Vec<Vec<u8>> = (0..8).map(|t| synthetic_frame(w, h, t)).collect();
    let instruction = "go to the red ball";

    let mut run = |decoding: Decoding, runs: usize| -> Result<(Vec<f64>, Vec<f64>)> {
        policy.reset();
        let (mut total, mut preprocess) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for i in 0..args.warmup + runs {
            let frame = Frame::Raw(RawFrame::packed(w, h, PixelEncoding::Rgb8, &frames[i % frames.len()]));
            let start = Instant::now();
            let out = policy.decide(&frame, instruction, decoding)?;
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
    let uncached = if args.skip_uncached {
        None
    } else {
        Some(Latency::of(&mut run(Decoding::Uncached, args.runs)?.0))
    };
    let mut report = serde_json::json!({
        "model": policy.model_id(),
        "params_total": params.total,
        "params_active_per_token": params.active_per_token,
        "threads": threads,
        "runs": args.runs,
        "frame": format!("{w}x{h} rgb8"),
        "preprocess_median_ms": preprocess.median,
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
    println!("preprocessing median {:.2} ms (included above)", preprocess.median);
    Ok(())
}
