//! The network's decoding procedures, weights I/O and typed errors.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use common::{micro_config, period_stamp, picture, policy, variants};
use moe_vla::model::{
    init_model, load_model, save_weights, DecoderKind, FrameRetention, FrameTokenCache, ModelError, ObservationBatch,
    StreamingCache, TextInput, VlaConfig, VlaModel,
};
use moe_vla::policy::{Decoding, Frame, PixelEncoding, RawFrame};

fn frame(data: &[u8], w: u32, h: u32) -> Frame<'_> {
    Frame::Raw(RawFrame::packed(w, h, PixelEncoding::Rgb8, data))
}

#[test]
fn cached_decoding_equals_uncached_for_every_variant() {
    for (name, cfg) in variants() {
        let mut cached = policy(cfg.clone(), 7);
        let mut uncached = policy(cfg, 7);
        // More frames than the history window, and an instruction change half-way.
        for t in 0..6u32 {
            let data = picture(48, 40, t);
            let text = if t < 4 { "go to the red ball" } else { "crawl under the bar" };
            let a = cached.decide(&frame(&data, 48, 40), text, period_stamp(t), Decoding::Cached).unwrap();
            let b = uncached.decide(&frame(&data, 48, 40), text, period_stamp(t), Decoding::Uncached).unwrap();
            assert_eq!(a.bins, b.bins, "{name} step {t}");
            for (qa, qb) in a.q.iter().zip(&b.q) {
                assert!((qa - qb).abs() < 1e-4, "{name} step {t}: {qa} vs {qb}");
            }
        }
    }
}

#[test]
fn frame_token_cache_equals_recomputing_every_frame() {
    let cfg = micro_config();
    let (model, _) = init_model(&cfg, 3, &Device::Cpu).unwrap();
    let mut cache = FrameTokenCache::new(cfg.history);
    let ids = [2u32, 5, 9];
    let images: Vec<Tensor> = (0..5).map(|t| image(&cfg, t)).collect();
    for (t, img) in images.iter().enumerate() {
        let (text, window) = cache.observe(&model, &ids, &ids_input(&ids), img, FrameRetention::Keep).unwrap();
        assert_eq!(window.len(), cfg.history);
        // Recompute: the last `history` frames, the oldest repeated while fewer were seen.
        let first = (t + 1).saturating_sub(cfg.history);
        let mut expected: Vec<&Tensor> = images[first..=t].iter().collect();
        while expected.len() < cfg.history {
            expected.insert(0, expected[0]);
        }
        for (cached, img) in window.iter().zip(expected) {
            let fresh = model.encode_frame(img, &text).unwrap();
            assert_eq!(max_diff(cached, &fresh), 0.0, "step {t}");
        }
    }
    // A new instruction re-encodes: no frame conditioned on the old text survives.
    let (text, window) = cache.observe(&model, &[3, 4], &ids_input(&[3, 4]), &images[0], FrameRetention::Keep).unwrap();
    let fresh = model.encode_frame(&images[0], &text).unwrap();
    for cached in &window {
        assert_eq!(max_diff(cached, &fresh), 0.0);
    }
}

fn image(cfg: &VlaConfig, seed: u64) -> Tensor {
    let s = cfg.image_size;
    let values: Vec<f32> = (0..3 * s * s).map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0).collect();
    Tensor::from_vec(values, (1, 3, s, s), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// One instruction's word-level ids as the text encoder's input.
fn ids_input(ids: &[u32]) -> TextInput {
    TextInput::Ids(Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap())
}

fn observation(cfg: &VlaConfig, ids: &[u32]) -> ObservationBatch {
    let frames: Vec<Tensor> = (0..cfg.history as u64).map(|t| image(cfg, t)).collect();
    ObservationBatch { text: ids_input(ids), text_valid: None, frames: Tensor::stack(&frames, 1).unwrap() }
}

/// Q values of every dimension for the joint action `bins`, from one full forward pass.
fn per_dimension_q(model: &VlaModel, obs: &ObservationBatch, bins: &[u32]) -> Vec<Vec<f32>> {
    let prefix = Tensor::new(&bins[..bins.len() - 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(obs, &prefix).unwrap().0.squeeze(0).unwrap();
    logits.to_vec2::<f32>().unwrap().iter().map(|row| row.iter().map(|x| moe_vla::model::sigmoid(*x)).collect()).collect()
}

#[test]
fn greedy_argmax_equals_brute_force_on_a_small_action_space() {
    let mut cfg = micro_config();
    cfg.actions.names = vec!["a".into(), "b".into(), "c".into()];
    cfg.actions.bins = 4;
    cfg.actions.low = vec![0.0; 3];
    cfg.actions.high = vec![1.0; 3];
    for seed in 0..4 {
        let (model, _) = init_model(&cfg, seed, &Device::Cpu).unwrap();
        let obs = observation(&cfg, &[2, 3, 4]);
        // All 64 joint actions; greedy decoding must pick the lexicographic maximum of
        // (Q0(a0), Q1(a0, a1), Q2(a0, a1, a2)).
        let mut best: Option<(Vec<f32>, Vec<u32>)> = None;
        for code in 0..64u32 {
            let bins = vec![code / 16, (code / 4) % 4, code % 4];
            let q = per_dimension_q(&model, &obs, &bins);
            let key: Vec<f32> = (0..3).map(|d| q[d][bins[d] as usize]).collect();
            let better = match &best {
                None => true,
                Some((k, _)) => key.iter().zip(k).find(|(a, b)| a != b).is_some_and(|(a, b)| a > b),
            };
            if better {
                best = Some((key, bins));
            }
        }
        let (best_q, best_bins) = best.unwrap();
        let valid = vec![vec![true; 4]; 3];
        let text = model.encode_text(&obs.text, None).unwrap();
        let frames: Vec<Tensor> = (0..cfg.history as u64).map(|t| model.encode_frame(&image(&cfg, t), &text).unwrap()).collect();
        for decision in [model.decode_cached(&text, &frames, &valid).unwrap(), model.decode_uncached(&obs, &valid).unwrap()] {
            assert_eq!(decision.bins, best_bins, "seed {seed}");
            for (a, b) in decision.q.iter().zip(&best_q) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn decoding_respects_validity_masks() {
    let cfg = micro_config();
    let (model, _) = init_model(&cfg, 1, &Device::Cpu).unwrap();
    let obs = observation(&cfg, &[2, 3]);
    let bins = cfg.actions.bins;
    // Allow a single bin per dimension, a different one each: decoding must choose it.
    let valid: Vec<Vec<bool>> = (0..cfg.action_dims()).map(|d| (0..bins).map(|b| b == (d * 17) % bins).collect()).collect();
    let decision = model.decode_uncached(&obs, &valid).unwrap();
    let expected: Vec<u32> = (0..cfg.action_dims()).map(|d| ((d * 17) % bins) as u32).collect();
    assert_eq!(decision.bins, expected);
}

fn saved(tensors: &BTreeMap<String, Tensor>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_weights(tensors, &path).unwrap();
    (dir, path)
}

/// A streaming model whose age biases are far from their zero start, so that a frame's age
/// changes what the action tokens read.
fn streaming_model(seed: u64) -> (VlaConfig, VlaModel) {
    let mut cfg = micro_config();
    cfg.decoder = DecoderKind::Streaming;
    let (_, mut tensors) = init_model(&cfg, seed, &Device::Cpu).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("age_bias") {
            *t = Tensor::randn(0f32, 2.0, t.dims(), &Device::Cpu).unwrap();
        }
    }
    let (_dir, path) = saved(&tensors);
    (cfg.clone(), load_model(&cfg, &path, &Device::Cpu).unwrap().0)
}

/// The window of the last `history` images up to `t`, the oldest repeated at the start.
fn window_batch(cfg: &VlaConfig, ids: &[u32], images: &[Tensor], first: usize, t: usize) -> ObservationBatch {
    let window: Vec<Tensor> = moe_vla::model::history_window(first, t, cfg.history).map(|i| images[i].clone()).collect();
    ObservationBatch { text: ids_input(ids), text_valid: None, frames: Tensor::stack(&window, 1).unwrap() }
}

#[test]
fn streaming_cached_decoding_equals_the_uncached_forward() {
    for seed in 0..3 {
        let (cfg, model) = streaming_model(seed);
        let valid = vec![vec![true; cfg.actions.bins]; cfg.action_dims()];
        let images: Vec<Tensor> = (0..9).map(|t| image(&cfg, t)).collect();
        let mut cache = StreamingCache::new(cfg.history);
        // Three times the history, with an instruction change in the middle.
        let mut first = 0;
        for t in 0..images.len() {
            let ids: &[u32] = if t < 5 { &[2, 5, 9] } else { &[3, 4] };
            if t == 5 {
                first = 5;
            }
            let a = cache.decide(&model, ids, &ids_input(ids), &images[t], FrameRetention::Keep, &valid).unwrap();
            let b = model.decode_uncached(&window_batch(&cfg, ids, &images, first, t), &valid).unwrap();
            assert_eq!(a.bins, b.bins, "seed {seed} step {t}");
            for (qa, qb) in a.q.iter().zip(&b.q) {
                assert!((qa - qb).abs() < 1e-4, "seed {seed} step {t}: {qa} vs {qb}");
            }
            assert_eq!(a.load.counts.len(), cfg.layers);
        }
    }
}

#[test]
fn streaming_frames_see_only_the_instruction_and_themselves() {
    let (cfg, model) = streaming_model(4);
    let text = model.encode_text(&ids_input(&[2, 5, 9]), None).unwrap();
    let frames: Vec<Tensor> = (0..cfg.history as u64).map(|t| model.encode_frame(&image(&cfg, t), &text).unwrap()).collect();
    let obs = |frames: &[Tensor]| moe_vla::model::EncodedObservation {
        text_tokens: text.tokens.clone(),
        text_valid: None,
        frames: Tensor::stack(frames, 1).unwrap(),
    };
    let bins = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
    let base = model.forward_encoded(&obs(&frames), &bins).unwrap();
    // Swapping two older frames changes what the actions see (their ages differ) ...
    let mut swapped = frames.clone();
    swapped.swap(0, 1);
    assert!(max_diff(&base, &model.forward_encoded(&obs(&swapped), &bins).unwrap()) > 1e-4);
    // ... and without age biases it would not: the frames' own states do not depend on their slot.
    let (plain, _) = init_model(&cfg, 4, &Device::Cpu).unwrap(); // age biases start at zero
    let a = plain.forward_encoded(&obs(&frames), &bins).unwrap();
    let b = plain.forward_encoded(&obs(&swapped), &bins).unwrap();
    assert!(max_diff(&a, &b) < 1e-5, "a frame's tokens depend on its slot: {}", max_diff(&a, &b));
}

#[test]
fn weights_round_trip_gives_identical_outputs() {
    for (name, cfg) in variants() {
        let (model, tensors) = init_model(&cfg, 11, &Device::Cpu).unwrap();
        let (_dir, path) = saved(&tensors);
        let (loaded, params) = load_model(&cfg, &path, &Device::Cpu).unwrap();
        assert_eq!(params.total, tensors.values().map(|t| t.elem_count()).sum::<usize>());
        let obs = observation(&cfg, &[2, 3, 4]);
        let bins = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let a = model.forward(&obs, &bins).unwrap().0;
        let b = loaded.forward(&obs, &bins).unwrap().0;
        assert_eq!(max_diff(&a, &b), 0.0, "{name}");
    }
}

#[test]
fn init_is_reproducible_for_a_seed() {
    let cfg = micro_config();
    let (_, a) = init_model(&cfg, 5, &Device::Cpu).unwrap();
    let (_, b) = init_model(&cfg, 5, &Device::Cpu).unwrap();
    let (_, c) = init_model(&cfg, 6, &Device::Cpu).unwrap();
    let name = "decoder.0.ffn.experts.1.w1.weight";
    assert_eq!(max_diff(&a[name], &b[name]), 0.0);
    assert!(max_diff(&a[name], &c[name]) > 0.0);
}

#[test]
fn damaged_weight_files_give_typed_errors() {
    let cfg = micro_config();
    let (_, tensors) = init_model(&cfg, 2, &Device::Cpu).unwrap();
    let (dir, path) = saved(&tensors);
    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.safetensors");

    // Truncated.
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_model(&cfg, &damaged, &Device::Cpu), Err(ModelError::CorruptWeights { .. })));
    // One flipped bit in the tensor data: caught by the checksum.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    std::fs::write(&damaged, &flipped).unwrap();
    let err = load_model(&cfg, &damaged, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::CorruptWeights { .. }) && err.to_string().contains("checksum"), "{err}");
    // Garbage header.
    let mut garbage = bytes.clone();
    garbage[8..16].copy_from_slice(b"!!!!!!!!");
    std::fs::write(&damaged, &garbage).unwrap();
    assert!(matches!(load_model(&cfg, &damaged, &Device::Cpu), Err(ModelError::CorruptWeights { .. })));
    // Not a safetensors file at all, and a missing file.
    std::fs::write(&damaged, b"hello").unwrap();
    assert!(matches!(load_model(&cfg, &damaged, &Device::Cpu), Err(ModelError::CorruptWeights { .. })));
    assert!(matches!(load_model(&cfg, &dir.path().join("absent.safetensors"), &Device::Cpu), Err(ModelError::Io { .. })));
}

#[test]
fn non_finite_weights_are_rejected() {
    let cfg = micro_config();
    let (_, mut tensors) = init_model(&cfg, 2, &Device::Cpu).unwrap();
    let name = "q_head.bias".to_string();
    let n = tensors[&name].elem_count();
    let mut values = vec![0f32; n];
    values[3] = f32::NAN;
    tensors.insert(name, Tensor::from_vec(values, n, &Device::Cpu).unwrap());
    let (_dir, path) = saved(&tensors);
    let err = load_model(&cfg, &path, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn weights_that_do_not_match_the_config_are_rejected() {
    let cfg = micro_config();
    let (_, tensors) = init_model(&cfg, 2, &Device::Cpu).unwrap();
    let (_dir, path) = saved(&tensors);

    let mut wider = cfg.clone();
    wider.d_model = 64;
    let err = load_model(&wider, &path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }) && err.to_string().contains("shape"), "{err}");

    let mut deeper = cfg.clone();
    deeper.layers = 3;
    let err = load_model(&deeper, &path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }) && err.to_string().contains("missing"), "{err}");

    let mut shallower = cfg.clone();
    shallower.layers = 1;
    let err = load_model(&shallower, &path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }) && err.to_string().contains("unexpected"), "{err}");

    let mut broken = cfg.clone();
    broken.heads = 5;
    assert!(matches!(load_model(&broken, &path, &Device::Cpu), Err(ModelError::Config(_))));
}

#[test]
fn padded_batches_equal_single_unpadded_samples() {
    let cfg = micro_config();
    let (model, _) = init_model(&cfg, 8, &Device::Cpu).unwrap();
    let short = observation(&cfg, &[2, 3]);
    let long = observation(&cfg, &[4, 5, 6, 7]);
    // Batch of both, the short instruction padded with token 0 and masked out.
    let ids = Tensor::new(&[[2u32, 3, 0, 0], [4, 5, 6, 7]], &Device::Cpu).unwrap();
    let valid = Tensor::new(&[[1f32, 1., 0., 0.], [1., 1., 1., 1.]], &Device::Cpu).unwrap();
    let frames = Tensor::cat(&[&short.frames, &long.frames], 0).unwrap();
    let batch = ObservationBatch { text: TextInput::Ids(ids), text_valid: Some(valid), frames };
    let bins = Tensor::new(&[[9u32, 1], [3, 250]], &Device::Cpu).unwrap();
    let batched = model.forward(&batch, &bins).unwrap().0;
    for (i, obs) in [short, long].iter().enumerate() {
        let alone = model.forward(obs, &bins.narrow(0, i, 1).unwrap()).unwrap().0;
        assert!(max_diff(&batched.narrow(0, i, 1).unwrap(), &alone) < 1e-4, "sample {i}");
    }
}

/// `config/tiny-streaming-dense.json` and `config/tiny-streaming-dense-history6.json`, the dense
/// baselines of docs/experiments.md, are the shipped architectures (3 and 6 frames of history) with the mixture
/// replaced by one dense feed-forward of the same active width.
#[test]
fn the_dense_baseline_configs_are_the_shipped_architectures_with_a_dense_feed_forward() {
    use moe_vla::model::config::{FeedForwardKind, TextKind};
    let config = |name: &str| -> VlaConfig {
        let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
        let cfg: VlaConfig = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        cfg.validate().unwrap();
        cfg
    };
    let moe3 = VlaConfig::preset("tiny-streaming").unwrap().with_text(TextKind::Minilm);
    let moe6 = config("tiny-streaming-history6.json");
    assert_eq!(VlaConfig { history: moe3.history, ..moe6.clone() }, moe3, "history6 differs only in history");
    assert_eq!(moe6.history, 6);
    for (dense, moe) in [("tiny-streaming-dense.json", moe3), ("tiny-streaming-dense-history6.json", moe6)] {
        let dense = config(dense);
        assert_eq!(dense.ffn.kind, FeedForwardKind::Dense);
        assert_eq!(dense.ffn.hidden, moe.ffn.top_k * moe.ffn.hidden, "same active width as top-k experts");
        assert_eq!(VlaConfig { ffn: moe.ffn.clone(), ..dense }, moe, "only the feed-forward differs");
    }
}

#[test]
fn the_frame_period_is_recorded_defaults_for_older_configs_and_must_be_a_positive_time() {
    let cfg = micro_config();
    let mut json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["frame_period_s"], 0.2, "written into every config");
    json.as_object_mut().unwrap().remove("frame_period_s");
    let older: VlaConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(older.frame_period_s, moe_vla::model::config::DEFAULT_FRAME_PERIOD_S, "a config from before the field");
    for bad in [0.0, -0.2, f64::INFINITY, f64::NAN] {
        let err = VlaConfig { frame_period_s: bad, ..cfg.clone() }.validate().unwrap_err();
        assert!(err.contains("frame_period_s"), "{bad}: {err}");
    }
    json["frame_period_s"] = 0.1.into();
    let faster: VlaConfig = serde_json::from_value(json).unwrap();
    assert_eq!(faster.frame_period_s, 0.1);
    faster.validate().unwrap();
}
