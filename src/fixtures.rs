//! Fixtures shared by `moe_vla init`, `moe_vla bench`, `cargo bench` and the tests: a randomly
//! initialised policy for a preset, the task instructions and synthetic camera frames.

use candle_core::Device;

use crate::model::{count_params, init_model, VlaConfig};
use crate::policy::tokenize::train_word_level;
use crate::policy::{InstructionTokenizer, Policy, PolicyError};

/// Instructions of the task families, also the vocabulary of `moe_vla init`'s tests.
pub const SAMPLE_INSTRUCTIONS: &str = include_str!("../data/instructions.txt");

/// The non-comment lines of an instruction list.
pub fn instruction_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// A policy with random weights (seeded) and a tokenizer trained on `instructions`. The config's
/// vocabulary is set to the tokenizer's.
pub fn random_policy(mut cfg: VlaConfig, instructions: &[String], seed: u64, device: &Device) -> Result<Policy, PolicyError> {
    let tokenizer = train_word_level(instructions.iter(), cfg.text.vocab_size)
        .map_err(|e| PolicyError::Tokenizer { path: "<trained in memory>".into(), reason: e.to_string() })?;
    cfg.text.vocab_size = tokenizer.get_vocab_size(true);
    let (model, tensors) = init_model(&cfg, seed, device)?;
    let params = count_params(&cfg, tensors.iter());
    let tokenizer = InstructionTokenizer::new(tokenizer, cfg.text.max_tokens, cfg.text.vocab_size);
    Policy::new(model, params, tokenizer, "random".into())
}

/// A deterministic rgb8 frame whose content shifts with `t`, as a moving camera's would.
pub fn synthetic_frame(width: u32, height: u32, t: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = x.wrapping_mul(7).wrapping_add(y.wrapping_mul(13)).wrapping_add(t.wrapping_mul(31));
            data.extend_from_slice(&[(v % 251) as u8, ((v / 3) % 241) as u8, ((x ^ y ^ t) % 256) as u8]);
        }
    }
    data
}
