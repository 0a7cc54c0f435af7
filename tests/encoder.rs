//! Instructions through a frozen sentence encoder (`text.kind: minilm`): the config kind, the
//! policy running the encoder once per instruction, and the installed all-MiniLM-L6-v2 (which
//! scripts/setup.sh downloads; the test fails, never skips, when it is missing).

mod common;

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use common::{micro_config, period_stamp, picture};
use moe_vla::fixtures::{instruction_lines, random_policy_with, tiny_sentence_encoder, SAMPLE_INSTRUCTIONS};
use moe_vla::model::{init_model, save_weights, DecoderKind, EncoderRef, TextConfig, TextKind, VlaConfig};
use moe_vla::policy::encoder::ENCODERS_ENV;
use moe_vla::policy::{
    Decoding, EncoderError, Frame, InstructionText, PixelEncoding, Policy, PolicyError, RawFrame, SentenceEncoder,
};

fn frame(data: &[u8]) -> Frame<'_> {
    Frame::Raw(RawFrame { width: 64, height: 48, step: 64 * 3, encoding: PixelEncoding::Rgb8, data })
}

#[test]
fn text_kinds_round_trip_and_word_level_models_read_unchanged() {
    let minilm = VlaConfig::preset("tiny-minilm").unwrap();
    assert_eq!(minilm.text.kind, TextKind::Minilm);
    assert_eq!(minilm.text.encoder, Some(EncoderRef::all_minilm_l6_v2()));
    minilm.validate().unwrap();
    let json = serde_json::to_string(&minilm).unwrap();
    assert!(json.contains(r#""kind":"minilm""#) && json.contains("53aa51172d142c89"), "{json}");
    assert_eq!(serde_json::from_str::<VlaConfig>(&json).unwrap(), minilm);

    // A config written before text kinds (and the streaming decoder) existed reads as word_level,
    // and writing it back changes nothing but the now explicit fields.
    let mut legacy = serde_json::to_value(VlaConfig::tiny()).unwrap();
    legacy["text"].as_object_mut().unwrap().remove("kind");
    legacy.as_object_mut().unwrap().retain(|k, _| k != "decoder" && k != "decoder_weights");
    let default: VlaConfig = serde_json::from_value(legacy).unwrap();
    assert_eq!(default, VlaConfig::tiny());
    assert_eq!(default.text.kind, TextKind::WordLevel);
    assert_eq!(default.text.encoder, None);
    let again: VlaConfig = serde_json::from_str(&serde_json::to_string(&default).unwrap()).unwrap();
    assert_eq!(again, default);
    assert_eq!(default.clone().with_text(TextKind::WordLevel), default);

    let mut broken = minilm.clone();
    broken.text.encoder = None;
    assert!(broken.validate().unwrap_err().contains("needs text.encoder"));
    let mut broken = minilm.clone();
    broken.text.encoder.as_mut().unwrap().weights_sha256 = "abc".into();
    assert!(broken.validate().unwrap_err().contains("SHA-256"));
    let mut broken = default.clone();
    broken.text.encoder = Some(EncoderRef::all_minilm_l6_v2());
    assert!(broken.validate().unwrap_err().contains("only for kind minilm"));
    assert_eq!("word_level".parse::<TextKind>(), Ok(TextKind::WordLevel));
    assert!("bert".parse::<TextKind>().unwrap_err().contains("word_level, minilm"));
}

/// A micro network with `decoder` reading instructions through a small random BERT.
fn tiny_minilm_policy(seed: u64, decoder: DecoderKind) -> (Policy, Arc<SentenceEncoder>) {
    let (encoder, spec) = tiny_sentence_encoder(&instruction_lines(SAMPLE_INSTRUCTIONS), 5, &Device::Cpu);
    let encoder = Arc::new(encoder);
    let mut cfg = micro_config();
    cfg.text = TextConfig { encoder: Some(spec), ..TextConfig::minilm(8) };
    cfg.decoder = decoder;
    let text = InstructionText::Sentence { encoder: encoder.clone(), max_tokens: 8 };
    (random_policy_with(&cfg, text, seed, &Device::Cpu).unwrap(), encoder)
}

#[test]
fn the_sentence_encoder_runs_once_per_instruction_not_per_frame() {
    let (mut policy, encoder) = tiny_minilm_policy(3, DecoderKind::Full);
    let frames: Vec<Vec<u8>> = (0..6).map(|t| picture(64, 48, t)).collect();
    for (t, f) in (0..).zip(&frames) {
        policy.decide(&frame(f), "go to the red ball", period_stamp(t), Decoding::Cached).unwrap();
    }
    assert_eq!(encoder.runs(), 1, "six frames, one instruction");
    for (t, f) in (6..).zip(&frames[..3]) {
        policy.decide(&frame(f), "crawl under the bar", period_stamp(t), Decoding::Cached).unwrap();
    }
    assert_eq!(encoder.runs(), 2);
    policy.decide(&frame(&frames[0]), "  crawl under the bar ", period_stamp(9), Decoding::Uncached).unwrap();
    assert_eq!(encoder.runs(), 2, "the same tokens are the same instruction, whichever procedure decides");
    policy.reset();
    policy.decide(&frame(&frames[0]), "crawl under the bar", period_stamp(10), Decoding::Cached).unwrap();
    assert_eq!(encoder.runs(), 3, "a new episode encodes afresh");
    assert!(matches!(
        policy.decide(&frame(&frames[0]), " ", period_stamp(11), Decoding::Cached),
        Err(PolicyError::Instruction(_))
    ));
}

#[test]
fn cached_decoding_equals_uncached_with_a_sentence_encoder() {
    for decoder in [DecoderKind::Full, DecoderKind::Streaming] {
        let (mut cached, encoder) = tiny_minilm_policy(11, decoder);
        let (mut uncached, _) = tiny_minilm_policy(11, decoder);
        for t in 0..5 {
            let f = picture(64, 48, t);
            let a = cached.decide(&frame(&f), "walk towards the crimson sphere", period_stamp(t), Decoding::Cached).unwrap();
            let b = uncached.decide(&frame(&f), "walk towards the crimson sphere", period_stamp(t), Decoding::Uncached).unwrap();
            assert_eq!(a.bins, b.bins, "{decoder:?} frame {t}");
            for (x, y) in a.q.iter().zip(&b.q) {
                assert!((x - y).abs() < 1e-4, "{decoder:?} frame {t}: {x} vs {y}");
            }
        }
        assert_eq!(encoder.runs(), 1, "{decoder:?}: five frames, one instruction");
    }
}

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let dot = (a * b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let n = |x: &Tensor| x.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    dot / (n(a) * n(b))
}

/// One test, as it changes the process's environment to check the search order.
#[test]
fn the_installed_minilm_loads_fast_and_separates_paraphrases_from_other_tasks() {
    let spec = EncoderRef::all_minilm_l6_v2();
    let encoder = SentenceEncoder::locate(&spec, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}\n(scripts/setup.sh, which CI runs before the tests, installs it)"));
    let embed = |text: &str| encoder.embed_ids(&encoder.tokenize(text).unwrap()).unwrap().pooled;
    for (anchor, paraphrase, other) in [
        ("go to the red ball", "walk over to the red ball", "crawl under the bar"),
        ("stop", "halt", "go through the doorway"),
        ("crawl under the bar", "duck beneath the bar", "go to the red ball"),
    ] {
        let (close, far) = (cosine(&embed(anchor), &embed(paraphrase)), cosine(&embed(anchor), &embed(other)));
        assert!(close > far + 0.1, "{anchor:?}: paraphrase {close}, other {far}");
    }

    // A model folder names the encoder; loading finds it and the policy decides.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = micro_config().with_text(TextKind::Minilm);
    cfg.trained = false;
    let (_, tensors) = init_model(&cfg, 1, &Device::Cpu).unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    save_weights(&tensors, &dir.path().join("model.safetensors")).unwrap();
    let started = Instant::now();
    let mut policy = Policy::load(dir.path(), &Device::Cpu).unwrap();
    let load = started.elapsed();
    assert!(load.as_secs_f64() < 2.0, "loading took {load:?}");
    let f = picture(64, 48, 0);
    let decision = policy.decide(&frame(&f), "saunter over to the vermilion orb", 0.0, Decoding::Cached).unwrap();
    assert!(decision.q.iter().all(|q| q.is_finite()));

    // The explicit folder comes first, and a changed file is refused by its checksum.
    let installed = moe_vla::policy::encoder::locate_encoder(&spec.name).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join(&spec.name);
    std::fs::create_dir(&copy).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(installed.join(file), copy.join(file)).unwrap();
    }
    let tokenizer = std::fs::read_to_string(installed.join("tokenizer.json")).unwrap();
    std::fs::write(copy.join("tokenizer.json"), tokenizer.replacen("[UNK]", "[UNKNOWN]", 1)).unwrap();
    std::env::set_var(ENCODERS_ENV, elsewhere.path());
    let refused = Policy::load(dir.path(), &Device::Cpu).err().expect("a changed tokenizer is refused");
    assert!(matches!(refused, PolicyError::Encoder(EncoderError::Checksum { .. })), "{refused}");
    assert!(refused.to_string().contains("tokenizer.json"), "{refused}");

    // Nowhere to be found: the error says how to get it.
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var(ENCODERS_ENV, empty.path());
    std::env::set_var("XDG_CACHE_HOME", empty.path());
    std::env::remove_var("AMENT_PREFIX_PATH");
    let missing = Policy::load(dir.path(), &Device::Cpu).err().expect("no encoder, no policy").to_string();
    assert!(missing.contains("all-MiniLM-L6-v2 is not installed") && missing.contains("scripts/setup.sh"), "{missing}");
}
