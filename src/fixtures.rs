//! Fixtures shared by `moe_vla init`, `moe_vla bench`, `cargo bench` and the tests: a randomly
//! initialised policy for a preset, the task instructions and synthetic camera frames.

use std::str::FromStr;
use std::sync::Arc;

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::model::{count_params, init_model, seeded_var_builder, Bert, BertConfig, EncoderRef, TextKind, VlaConfig};
use crate::policy::tokenize::train_word_level;
use crate::policy::{InstructionText, InstructionTokenizer, Policy, PolicyError, SentenceEncoder};

/// Instructions of the task families, also the vocabulary of `moe_vla init`'s tests.
pub const SAMPLE_INSTRUCTIONS: &str = include_str!("../data/instructions.txt");

/// The non-comment lines of an instruction list.
pub fn instruction_lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// A policy with random weights (seeded) and, for a word-level config, a tokenizer trained on
/// `instructions` (the config's vocabulary is set to the tokenizer's); a `minilm` config loads its
/// installed sentence encoder.
pub fn random_policy(mut cfg: VlaConfig, instructions: &[String], seed: u64, device: &Device) -> Result<Policy, PolicyError> {
    let text: InstructionText = match (cfg.text.kind, &cfg.text.encoder) {
        (TextKind::Minilm, Some(spec)) => InstructionText::Sentence {
            encoder: Arc::new(SentenceEncoder::locate(spec, device)?),
            max_tokens: cfg.text.max_tokens,
        },
        _ => {
            let tokenizer = train_word_level(instructions.iter(), cfg.text.vocab_size)
                .map_err(|e| PolicyError::Tokenizer { path: "<trained in memory>".into(), reason: e.to_string() })?;
            cfg.text.vocab_size = tokenizer.get_vocab_size(true);
            InstructionTokenizer::new(tokenizer, cfg.text.max_tokens, cfg.text.vocab_size).into()
        }
    };
    random_policy_with(&cfg, text, seed, device)
}

/// A policy with random weights (seeded) reading instructions through `text`.
pub fn random_policy_with(cfg: &VlaConfig, text: InstructionText, seed: u64, device: &Device) -> Result<Policy, PolicyError> {
    let (model, tensors) = init_model(cfg, seed, device)?;
    let params = count_params(cfg, tensors.iter());
    Policy::new(model, params, text, "random".into())
}

/// Width of `tiny_sentence_encoder`'s states.
pub const TINY_ENCODER_WIDTH: usize = 16;

/// A small BERT sentence encoder with random weights (seeded) and a WordPiece vocabulary of the
/// lower-cased words of `instructions`, for tests that must not need the installed 90 MB
/// encoder; and the reference a `minilm` config makes to it (placeholder checksums, which only
/// `SentenceEncoder::load` checks).
pub fn tiny_sentence_encoder(instructions: &[String], seed: u64, device: &Device) -> (SentenceEncoder, EncoderRef) {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let mut words: Vec<String> = instructions.iter().flat_map(|i| i.split_whitespace().map(str::to_lowercase)).collect();
    words.sort();
    words.dedup();
    let vocab: serde_json::Map<String, serde_json::Value> =
        specials.iter().map(|s| s.to_string()).chain(words).enumerate().map(|(i, w)| (w, i.into())).collect();
    let special = |name: &str, id: usize| serde_json::json!({"id": id, "content": name, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let cls_sep = serde_json::json!({"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}});
    let seq = |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    let tok = |id: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": id, "type_id": type_id}});
    // The layout of all-MiniLM-L6-v2's tokenizer.json.
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": specials.iter().enumerate().map(|(i, s)| special(s, i)).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing", "single": [tok("[CLS]", 0), seq("A", 0), tok("[SEP]", 0)],
            "pair": [tok("[CLS]", 0), seq("A", 0), tok("[SEP]", 0), seq("B", 1), tok("[SEP]", 1)], "special_tokens": cls_sep},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    });
    let tokenizer = Tokenizer::from_str(&json.to_string()).expect("a valid tokenizer.json");
    let config = BertConfig {
        vocab_size: tokenizer.get_vocab_size(true),
        hidden_size: TINY_ENCODER_WIDTH,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
    };
    let bert = Bert::new(&config, seeded_var_builder(seed, device)).expect("a valid config");
    let encoder = SentenceEncoder::new("tiny-random-bert".into(), bert, tokenizer, device).expect("a valid tokenizer");
    let spec = EncoderRef {
        name: encoder.name().into(),
        width: TINY_ENCODER_WIDTH,
        weights_sha256: "0".repeat(64),
        tokenizer_sha256: "0".repeat(64),
    };
    (encoder, spec)
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
