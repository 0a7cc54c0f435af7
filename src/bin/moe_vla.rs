//! `moe_vla`: create, train, inspect and benchmark models; replay bags.

#[path = "../cli/sim.rs"]
mod sim_cmd;
#[path = "../cli/train.rs"]
mod train_cmd;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moe_vla::action::ActionSpace;
use moe_vla::bag::{BagReader, BagWriter};
use moe_vla::bench::{instruction_lines, random_policy, synthetic_frame, SAMPLE_INSTRUCTIONS};
use moe_vla::control::{ControlConfig, ControlParams};
use moe_vla::model::{count_params, init_model, save_weights, ParamCount, VlaConfig};
use moe_vla::policy::tokenize::train_word_level;
use moe_vla::policy::{Decoding, Frame, PixelEncoding, Policy, RawFrame, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use moe_vla::replay::ReplayOptions;

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
    Info { model_dir: PathBuf },
    /// Batch-1 decision latency, cached and uncached decoding.
    Bench(BenchArgs),
    /// What the policy decides for a picture (png or jpeg) and an instruction: what the node
    /// would command for the same camera frame.
    Decide(DecideArgs),
    /// Feed a rosbag2 bag's camera frames and instructions through the node's controller, with
    /// the bag's timestamps as the clock, and record what it commands.
    Replay(ReplayArgs),
    /// Train a model from episode bags: conservative Q-learning (default) or behaviour cloning.
    Train(train_cmd::TrainArgs),
    /// Record episodes of scripted experts in the task world: one rosbag2 bag per episode.
    Collect(sim_cmd::CollectArgs),
    /// Closed-loop success rates in the task world, through the node's controller.
    Eval(sim_cmd::EvalArgs),
    /// Inspect rosbag2 bags (MCAP).
    Bag {
        #[command(subcommand)]
        command: BagCommand,
    },
}

#[derive(Subcommand)]
enum BagCommand {
    /// Topics, types, message counts and duration, like `ros2 bag info`.
    Info { bag: PathBuf },
    /// Decoded messages of the types moe_vla knows, one JSON object per line (byte arrays as
    /// their length and CRC32).
    Echo {
        bag: PathBuf,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// Input bag: a rosbag2 directory or a .mcap file.
    #[arg(long)]
    bag: PathBuf,
    #[arg(long)]
    model: PathBuf,
    /// Output bag directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Follow this instruction from the start, ignoring the bag's instruction topic.
    #[arg(long)]
    instruction: Option<String>,
    #[arg(long, default_value = moe_vla::topics::CAMERA.absolute)]
    image_topic: String,
    #[arg(long, default_value = moe_vla::topics::INSTRUCTION.absolute)]
    instruction_topic: String,
    /// The node's parameter file (its control rate, timeout and limits apply).
    #[arg(long)]
    params_file: Option<PathBuf>,
    /// CPU threads for inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
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
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`moe_vla bag echo ... | head`) instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // candle splits even batch-1 matrix products across threads, which costs more than it gains
    // here; parallelism comes from the policy's own pool (experts run side by side) instead.
    // Training's large batches do gain: there the kernels get every core (or --threads).
    // Set before any thread exists; an explicit RAYON_NUM_THREADS is respected.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = match &cli.command {
            // A number, not "0": with "0" candle re-reads the CPU count from /proc on every kernel.
            Command::Train(args) => {
                args.threads().unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).to_string()
            }
            _ => "1".to_string(),
        };
        std::env::set_var("RAYON_NUM_THREADS", threads);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Init(args) => init(args),
        Command::Info { model_dir } => info(&model_dir),
        Command::Bench(args) => bench(args),
        Command::Decide(args) => decide(args),
        Command::Replay(args) => replay(args),
        Command::Train(args) => train_cmd::train(args),
        Command::Collect(args) => sim_cmd::collect(args),
        Command::Eval(args) => sim_cmd::eval(args),
        Command::Bag { command: BagCommand::Info { bag } } => bag_info(&bag),
        Command::Bag { command: BagCommand::Echo { bag, topic } } => bag_echo(&bag, topic.as_deref()),
    }
}

fn preset(name: &str) -> Result<VlaConfig> {
    VlaConfig::preset(name).with_context(|| format!("unknown preset '{name}' (known: {})", VlaConfig::PRESETS.join(", ")))
}

fn init(args: InitArgs) -> Result<()> {
    let mut cfg = preset(&args.preset)?;
    let text =
        std::fs::read_to_string(&args.instructions).with_context(|| format!("cannot read {}", args.instructions.display()))?;
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
    tokenizer.save(args.out.join(TOKENIZER_FILE), true).map_err(|e| anyhow::anyhow!("cannot write the tokenizer: {e}"))?;
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

fn replay(args: ReplayArgs) -> Result<()> {
    let mut policy = Policy::load(&args.model, &Device::Cpu)?;
    if let Some(threads) = args.threads {
        policy.set_threads(threads)?;
    }
    let control = match &args.params_file {
        Some(path) => control_from_params_file(path)?,
        None => ControlConfig::default(),
    };
    let bag = BagReader::open(&args.bag)?;
    let mut out = BagWriter::create(&args.out)?;
    let opts = ReplayOptions {
        image_topic: args.image_topic,
        instruction_topic: args.instruction_topic,
        instruction: args.instruction,
        control,
        frame_id: "base_link".into(),
    };
    let bar = ProgressBar::new(bag.size()).with_style(
        ProgressStyle::with_template("{spinner} replaying [{bar:40}] {bytes}/{total_bytes} {elapsed} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if args.json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let summary = moe_vla::replay::replay(&bag, &mut policy, &opts, &mut out, |bytes| bar.inc(bytes))?;
    bar.finish_and_clear();
    let dir = out.finish()?;
    let ms = |q| summary.latency.quantile(q).unwrap_or(f32::NAN);
    let c = &summary.counters;
    if args.json {
        let stops: serde_json::Map<String, serde_json::Value> =
            c.stops.iter().map(|(k, (n, _))| (k.to_string(), (*n).into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "out": dir, "messages": summary.read.messages, "damage": summary.read.damage,
                "frames": c.frames, "bad_frames": c.bad_frames,
                "instructions": c.instructions, "bad_instructions": c.bad_instructions,
                "decisions": c.decisions, "failed_decisions": c.failed_decisions, "stale_decisions": c.stale_decisions,
                "commands": c.commands, "skipped": summary.skipped, "stops": stops,
                "latency_median_ms": ms(0.5), "latency_p99_ms": ms(0.99),
            })
        );
        return Ok(());
    }
    if !policy.config().trained {
        println!("UNTRAINED model: its commands are meaningless");
    }
    println!("replayed {} -> {}", args.bag.display(), dir.display());
    println!(
        "  messages read  {} over {:.2} s",
        summary.read.messages,
        (summary.span.1.saturating_sub(summary.span.0)) as f64 * 1e-9
    );
    for damage in &summary.read.damage {
        println!("  DAMAGED        {damage}");
    }
    println!("  frames         {} ({} unusable)", c.frames, c.bad_frames);
    println!("  instructions   {} ({} rejected)", c.instructions, c.bad_instructions);
    println!("  decisions      {} ({} failed)", c.decisions, c.failed_decisions);
    println!("  commands       {}", c.commands);
    for (topic, n) in &summary.skipped {
        println!("  skipped        {n} on {topic}");
    }
    for (kind, (n, text)) in &c.stops {
        println!("  stops          {n} x {kind}: {text}");
    }
    println!("  decision latency (wall clock) median {:.1} ms, p99 {:.1} ms", ms(0.5), ms(0.99));
    Ok(())
}

/// The control settings of a moe_vla_node parameter file (`/**` or `moe_vla_node` section); the
/// node's other parameters are not the controller's and are skipped.
fn control_from_params_file(path: &Path) -> Result<ControlConfig> {
    use yaml_rust2::{Yaml, YamlLoader};
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let docs = YamlLoader::load_from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    let doc = docs.first().context("empty parameter file")?;
    let params = ["/**", "moe_vla_node", "/moe_vla_node"]
        .iter()
        .map(|section| &doc[*section]["ros__parameters"])
        .find(|p| !p.is_badvalue())
        .with_context(|| format!("{} has no /** or moe_vla_node ros__parameters", path.display()))?;
    let Yaml::Hash(entries) = params else {
        bail!("{}: ros__parameters is not a mapping", path.display());
    };
    let mut values = serde_json::Map::new();
    for (key, value) in entries {
        let (Some(name), value) = (key.as_str(), value) else { continue };
        let value = match value {
            Yaml::Real(r) => {
                serde_json::Value::from(r.parse::<f64>().with_context(|| format!("{}: {name} = {r}", path.display()))?)
            }
            Yaml::Integer(i) => serde_json::Value::from(*i),
            Yaml::Boolean(b) => serde_json::Value::from(*b),
            Yaml::String(s) => serde_json::Value::from(s.as_str()),
            _ => continue,
        };
        values.insert(name.to_owned(), value);
    }
    let known = serde_json::to_value(ControlParams::default())?;
    values.retain(|name, _| known.get(name).is_some());
    let params: ControlParams = serde_json::from_value(serde_json::Value::Object(values))
        .with_context(|| format!("{}: a control parameter has the wrong type", path.display()))?;
    Ok(params.to_config())
}

fn bag_echo(path: &Path, only: Option<&str>) -> Result<()> {
    use moe_vla::bag::msgs::*;
    use moe_vla::bag::{decode, CdrError};
    use serde_json::{json, Value};

    fn value<M: RosMessage>(data: &[u8]) -> Result<Value, CdrError> {
        let mut v = serde_json::to_value(decode::<M>(data)?).expect("messages are plain data");
        if let Some(bytes) = v.get("data").and_then(Value::as_array) {
            let bytes: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect();
            v["data"] = json!({ "len": bytes.len(), "crc32": crc32fast::hash(&bytes) });
        }
        Ok(v)
    }

    let bag = BagReader::open(path)?;
    let mut unknown = 0u64;
    let report = bag.for_each(|m| {
        if only.is_some_and(|t| t != m.topic) {
            return;
        }
        let decoded = match m.type_name {
            Image::TYPE => value::<Image>(m.data),
            CompressedImage::TYPE => value::<CompressedImage>(m.data),
            StringMsg::TYPE => value::<StringMsg>(m.data),
            Twist::TYPE => value::<Twist>(m.data),
            TwistStamped::TYPE => value::<TwistStamped>(m.data),
            GaitCommand::TYPE => value::<GaitCommand>(m.data),
            VlaDecision::TYPE => value::<VlaDecision>(m.data),
            EpisodeOutcome::TYPE => value::<EpisodeOutcome>(m.data),
            Header::TYPE => value::<Header>(m.data),
            _ => {
                unknown += 1;
                return;
            }
        };
        let line = match decoded {
            Ok(msg) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "msg": msg }),
            Err(e) => json!({ "topic": m.topic, "type": m.type_name, "log_time": m.log_time, "error": e.to_string() }),
        };
        println!("{line}");
    })?;
    if unknown > 0 {
        eprintln!("skipped {unknown} messages of types moe_vla does not decode");
    }
    for damage in &report.damage {
        eprintln!("DAMAGED: {damage}");
    }
    Ok(())
}

fn bag_info(path: &Path) -> Result<()> {
    let bag = BagReader::open(path)?;
    let info = bag.info()?;
    let files: Vec<String> = info.files.iter().map(|f| f.display().to_string()).collect();
    println!("Files:             {}", files.join("\n                   "));
    println!("Bag size:          {:.1} MiB", info.size as f64 / (1024.0 * 1024.0));
    println!("Storage id:        mcap");
    let (start, end) = (info.start.unwrap_or(0), info.end.unwrap_or(0));
    println!("Duration:          {:.3}s", end.saturating_sub(start) as f64 * 1e-9);
    println!("Start:             {:.3} (ns since epoch: {start})", start as f64 * 1e-9);
    println!("End:               {:.3} (ns since epoch: {end})", end as f64 * 1e-9);
    println!("Messages:          {}", info.report.messages);
    let width = info.topics.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let type_width = info.topics.iter().map(|t| t.type_name.len()).max().unwrap_or(0);
    for (i, t) in info.topics.iter().enumerate() {
        println!(
            "{}Topic: {:<width$} | Type: {:<type_width$} | Count: {} | Serialization Format: {}",
            if i == 0 { "Topic information: " } else { "                   " },
            t.name,
            t.type_name,
            t.count,
            t.encoding
        );
    }
    for damage in &info.report.damage {
        println!("DAMAGED:           {damage}");
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
    let uncached = if args.skip_uncached { None } else { Some(Latency::of(&mut run(Decoding::Uncached, args.runs)?.0)) };
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
