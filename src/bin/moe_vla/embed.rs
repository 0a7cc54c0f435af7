//! `moe_vla embed`: what the frozen sentence encoder makes of instructions (its WordPiece ids and
//! sentence embedding), as JSON lines: to compare phrasings, and for the reference test.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use moe_vla::model::EncoderRef;
use moe_vla::policy::encoder::locate_encoder;
use moe_vla::policy::SentenceEncoder;

#[derive(Args)]
pub struct EmbedArgs {
    /// Instructions to encode.
    #[arg(required = true)]
    instructions: Vec<String>,
    /// Encoder folder (default: all-MiniLM-L6-v2 where scripts/setup.sh installs it).
    #[arg(long)]
    encoder_dir: Option<PathBuf>,
    /// Also print the last layer's token states (one row per id).
    #[arg(long)]
    token_states: bool,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let spec = EncoderRef::all_minilm_l6_v2();
    let dir = match args.encoder_dir {
        Some(dir) => dir,
        None => locate_encoder(&spec.name)?,
    };
    let encoder = SentenceEncoder::load(&dir, &spec, &Device::Cpu)?;
    for text in &args.instructions {
        let ids = encoder.tokenize(text)?;
        if ids.is_empty() {
            bail!("{text:?} gives no tokens");
        }
        let embedded = encoder.embed_ids(&ids)?;
        let mut line = serde_json::json!({
            "instruction": text,
            "ids": ids,
            "embedding": embedded.pooled.squeeze(0)?.to_vec1::<f32>()?,
        });
        if args.token_states {
            line["token_states"] = serde_json::json!(embedded.tokens.squeeze(0)?.to_vec2::<f32>()?);
        }
        println!("{line}");
    }
    Ok(())
}
