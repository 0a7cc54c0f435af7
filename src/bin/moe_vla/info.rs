//! `moe_vla info`: what a model folder holds.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use moe_vla::action::ActionSpace;
use moe_vla::model::{ParamCount, VlaConfig};
use moe_vla::policy::Policy;

#[derive(Args)]
pub struct InfoArgs {
    model_dir: PathBuf,
}

pub fn run(args: InfoArgs) -> Result<()> {
    // Loading the policy checks that weights, config and tokenizer agree.
    let policy = Policy::load(&args.model_dir, &Device::Cpu)?;
    print!("{}", describe(policy.config(), policy.params()));
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
        "vision               {:?}, {}x{} input, history {} (one frame per {} s), {} tokens per frame",
        cfg.vision.kind, cfg.image_size, cfg.image_size, cfg.history, cfg.frame_period_s, cfg.tokens_per_frame
    ));
    line(match &cfg.text.encoder {
        Some(e) => format!(
            "text                 frozen sentence encoder {} (width {}, weights sha256 {}), up to {} tokens",
            e.name, e.width, e.weights_sha256, cfg.text.max_tokens
        ),
        None => format!(
            "text                 vocabulary {}, up to {} tokens, {} layers",
            cfg.text.vocab_size, cfg.text.max_tokens, cfg.text.layers
        ),
    });
    line(format!(
        "decoder              {:?}, {} layers, width {}, {} heads, {:?} weights",
        cfg.decoder, cfg.layers, cfg.d_model, cfg.heads, cfg.decoder_weights
    ));
    line(format!(
        "feed-forward         {:?}: {} experts, top-{}, hidden {}, expert {:?}{}",
        f.kind,
        f.experts,
        f.top_k,
        f.hidden,
        f.expert_act,
        if f.lora_rank > 0 { format!(", LoRA rank {}", f.lora_rank) } else { String::new() }
    ));
    line(match cfg.behaviour_filter {
        Some(t) => {
            format!("argmax               over bins the behaviour head finds at least {t} times as likely as its favourite (BCQ)")
        }
        None => "argmax               over every supported bin".to_string(),
    });
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
