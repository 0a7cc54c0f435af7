//! `moe_vla decide`: the policy's decision for one picture and instruction.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use moe_vla::policy::{Decoding, Frame, Policy};

#[derive(Args)]
pub struct DecideArgs {
    model_dir: PathBuf,
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    instruction: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DecideArgs) -> Result<()> {
    let mut policy = Policy::load(&args.model_dir, &Device::Cpu)?;
    let bytes = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    // One picture: the first frame of a history, whatever its stamp.
    let out = policy.decide(&Frame::Compressed(&bytes), &args.instruction, 0.0, Decoding::Cached)?;
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
