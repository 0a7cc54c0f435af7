//! `moe_vla`: create, train, inspect and benchmark models; replay bags. One module per subcommand.

mod bag;
mod bench;
mod collect;
mod decide;
mod embed;
mod eval;
mod info;
mod init;
mod replay;
mod train;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Init(init::InitArgs),
    /// Parameter counts, action space and architecture of a model folder.
    Info(info::InfoArgs),
    /// Batch-1 decision latency, cached and uncached decoding.
    Bench(bench::BenchArgs),
    /// What the policy decides for a picture (png or jpeg) and an instruction: what the node
    /// would command for the same camera frame.
    Decide(decide::DecideArgs),
    /// Feed a rosbag2 bag's camera frames and instructions through the node's controller, with
    /// the bag's timestamps as the clock, and record what it commands.
    Replay(replay::ReplayArgs),
    /// Train a model from episode bags: conservative Q-learning (default) or behaviour cloning.
    Train(train::TrainArgs),
    /// Record episodes of scripted experts in the task world: one rosbag2 bag per episode.
    Collect(moe_vla::sim::CollectOptions),
    /// Closed-loop success rates in the task world, through the node's controller.
    Eval(eval::EvalArgs),
    /// The frozen sentence encoder's ids and embedding of instructions (JSON lines).
    Embed(embed::EmbedArgs),
    /// Inspect rosbag2 bags (MCAP).
    Bag {
        #[command(subcommand)]
        command: bag::BagCommand,
    },
}

fn main() -> Result<()> {
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`moe_vla bag echo ... | head`) instead of panicking on the broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut cli = Cli::parse();
    // candle splits even batch-1 matrix products across threads, which costs more than it gains
    // here; parallelism comes from our own pools instead: the policy's (experts run side by side)
    // and, in training, rayon's global pool, where each thread computes the gradient of its shard
    // of the batch (for this model's matrix sizes, far better than splitting every kernel).
    // Set before any thread exists. Outside training an explicit RAYON_NUM_THREADS is respected.
    if let Command::Train(args) = &mut cli.command {
        let threads = moe_vla::train::training_threads(args.threads);
        args.threads = Some(threads);
        // A number, not "0": with "0" candle re-reads the CPU count from /proc on every kernel.
        std::env::set_var("RAYON_NUM_THREADS", "1");
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    } else if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Init(args) => init::run(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Decide(args) => decide::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Train(args) => {
            moe_vla::train::keep_freed_memory();
            train::run(args)
        }
        Command::Collect(args) => collect::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Bag { command } => bag::run(command),
    }
}
