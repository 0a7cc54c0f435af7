//! `moe_vla init`: a randomly initialised model folder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use moe_vla::fixtures::instruction_lines;
use moe_vla::model::{count_params, init_model, save_weights, TextKind, VlaConfig};
use moe_vla::policy::encoder::locate_encoder;
use moe_vla::policy::tokenize::train_word_level;
use moe_vla::policy::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

#[derive(Args)]
pub struct InitArgs {
    /// Architecture preset: tiny, tiny-dense, tiny-streaming, tiny-minilm, germ (streaming decoder,
    /// bf16 weights) or germ-full.
    #[arg(long)]
    preset: String,
    /// Instruction list (one per line, '#' comments) the word-level tokenizer is trained on
    /// (not used by a sentence-encoder preset such as tiny-minilm).
    #[arg(long)]
    instructions: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace model files already in OUT.
    #[arg(long)]
    force: bool,
}

/// The architecture preset `name`; `moe_vla bench --preset` shares it.
pub fn preset(name: &str) -> Result<VlaConfig> {
    VlaConfig::preset(name).with_context(|| format!("unknown preset '{name}' (known: {})", VlaConfig::PRESETS.join(", ")))
}

pub fn run(args: InitArgs) -> Result<()> {
    let mut cfg = preset(&args.preset)?;
    let files = [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE];
    if !args.force && files.iter().any(|f| args.out.join(f).exists()) {
        bail!("{} already holds a model; pass --force to replace it", args.out.display());
    }
    cfg.trained = false;
    let text = match (cfg.text.kind, &cfg.text.encoder) {
        (TextKind::Minilm, Some(encoder)) => {
            // The folder refers to the encoder; make sure it is there to be referred to.
            let dir = locate_encoder(&encoder.name)?;
            format!("frozen sentence encoder {} ({})", encoder.name, dir.display())
        }
        _ => {
            let path = args.instructions.as_ref().context("--instructions is required for a word-level model")?;
            let lines = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let instructions = instruction_lines(&lines);
            if instructions.is_empty() {
                bail!("{} holds no instructions", path.display());
            }
            let tokenizer = train_word_level(instructions.iter(), cfg.text.vocab_size)?;
            cfg.text.vocab_size = tokenizer.get_vocab_size(true);
            std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
            tokenizer
                .save(args.out.join(TOKENIZER_FILE), true)
                .map_err(|e| anyhow::anyhow!("cannot write the tokenizer: {e}"))?;
            format!("vocabulary {} from {} instructions", cfg.text.vocab_size, instructions.len())
        }
    };
    let (_, tensors) = init_model(&cfg, args.seed, &Device::Cpu)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    std::fs::write(args.out.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg)? + "\n")?;
    save_weights(&tensors, &args.out.join(WEIGHTS_FILE))?;
    let params = count_params(&cfg, tensors.iter());
    println!("wrote an UNTRAINED {} model to {} ({} parameters, {text})", args.preset, args.out.display(), params.total,);
    Ok(())
}
