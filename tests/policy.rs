//! Preprocessing, tokenisation, model-folder loading and bad input through `Policy`.

mod common;

use std::io::Cursor;

use candle_core::{Device, Tensor};
use common::{micro_config, period_stamp, picture, policy};
use moe_vla::model::{init_model, save_weights};
use moe_vla::policy::preprocess::{decode_compressed, resize_raw, to_tensor, MAX_SIDE};
use moe_vla::policy::tokenize::{train_word_level, MAX_INSTRUCTION_BYTES};
use moe_vla::policy::{
    Decision, Decoding, Frame, FrameError, InstructionTokenizer, PixelEncoding, Policy, PolicyError, RawFrame, TokenizeError,
};
use moe_vla::sim::{render, sample_task, Pose, Scenario, TaskFamily};
use rand::SeedableRng;

fn tensor_of(frame: &RawFrame) -> Tensor {
    let cfg = micro_config();
    to_tensor(&resize_raw(frame, cfg.image_size as u32).unwrap(), &cfg.preprocess, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The same picture in another channel order (and with an alpha channel when `alpha`).
fn reorder(rgb: &[u8], swap: bool, alpha: bool) -> Vec<u8> {
    rgb.chunks_exact(3)
        .flat_map(|p| {
            let mut px = if swap { vec![p[2], p[1], p[0]] } else { p.to_vec() };
            if alpha {
                px.push(200);
            }
            px
        })
        .collect()
}

#[test]
fn every_colour_encoding_of_a_picture_gives_the_same_tensor() {
    // Odd sizes on purpose; one enlarges, one shrinks.
    for (w, h) in [(37, 23), (81, 67)] {
        same_tensor_for_every_encoding(w, h);
    }
}

fn same_tensor_for_every_encoding(w: u32, h: u32) {
    let rgb = picture(w, h, 1);
    let reference = tensor_of(&RawFrame::packed(w, h, PixelEncoding::Rgb8, &rgb));
    assert_eq!(reference.dims(), &[1, 3, 32, 32]);
    for (encoding, data) in [
        (PixelEncoding::Bgr8, reorder(&rgb, true, false)),
        (PixelEncoding::Rgba8, reorder(&rgb, false, true)),
        (PixelEncoding::Bgra8, reorder(&rgb, true, true)),
    ] {
        let t = tensor_of(&RawFrame::packed(w, h, encoding, &data));
        assert_eq!(max_diff(&t, &reference), 0.0, "{encoding:?}");
    }
    // Swapping channels must matter, or the test above proves nothing.
    let swapped = tensor_of(&RawFrame::packed(w, h, PixelEncoding::Rgb8, &reorder(&rgb, true, false)));
    assert!(max_diff(&swapped, &reference) > 0.1);
}

#[test]
fn mono8_becomes_equal_channels() {
    let gray: Vec<u8> = (0..15 * 9).map(|i| (i * 7 % 256) as u8).collect();
    let t = tensor_of(&RawFrame::packed(15, 9, PixelEncoding::Mono8, &gray));
    let r = t.narrow(1, 0, 1).unwrap();
    for c in 1..3 {
        assert_eq!(max_diff(&t.narrow(1, c, 1).unwrap(), &r), 0.0);
    }
}

#[test]
fn row_padding_is_skipped() {
    let (w, h) = (5u32, 4u32);
    let rgb = picture(w, h, 2);
    let step = w * 3 + 7;
    let padded: Vec<u8> = rgb.chunks_exact((w * 3) as usize).flat_map(|row| row.iter().copied().chain([0xAB; 7])).collect();
    let a = tensor_of(&RawFrame { width: w, height: h, step, encoding: PixelEncoding::Rgb8, data: &padded });
    let b = tensor_of(&RawFrame::packed(w, h, PixelEncoding::Rgb8, &rgb));
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn malformed_frames_are_rejected() {
    let data = picture(4, 4, 0);
    let bad_len = RawFrame::packed(4, 5, PixelEncoding::Rgb8, &data);
    assert_eq!(resize_raw(&bad_len, 32).unwrap_err(), FrameError::BadLength { expected: 60, got: 48 });
    let zero = RawFrame::packed(0, 4, PixelEncoding::Rgb8, &[]);
    assert!(matches!(resize_raw(&zero, 32), Err(FrameError::BadSize { .. })));
    let short_step = RawFrame { width: 4, height: 4, step: 8, encoding: PixelEncoding::Rgb8, data: &data[..32] };
    assert!(matches!(resize_raw(&short_step, 32), Err(FrameError::BadStep { .. })));
    let huge = RawFrame { width: MAX_SIDE + 1, height: 1, step: (MAX_SIDE + 1) * 3, encoding: PixelEncoding::Rgb8, data: &data };
    assert!(matches!(resize_raw(&huge, 32), Err(FrameError::BadSize { .. })));
    assert!(matches!("yuv422".parse::<PixelEncoding>(), Err(FrameError::UnknownEncoding(_))));
    assert_eq!("bgra8".parse::<PixelEncoding>(), Ok(PixelEncoding::Bgra8));
}

#[test]
fn compressed_frames_decode_like_raw_ones() {
    let (w, h) = (20, 12);
    let rgb = picture(w, h, 3);
    let img = image::RgbImage::from_raw(w, h, rgb.clone()).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    assert_eq!(decode_compressed(&png).unwrap().into_raw(), rgb);

    let mut jpeg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    assert_eq!(decode_compressed(&jpeg).unwrap().dimensions(), (w, h));
    // A JPEG cut short is a decode error, not a panic; random bytes are no image at all.
    assert!(matches!(decode_compressed(&jpeg[..jpeg.len() / 3]), Err(FrameError::Decode(_))));
    assert_eq!(decode_compressed(b"not an image at all").unwrap_err(), FrameError::UnknownFormat);
}

fn tokenizer(max_tokens: usize) -> InstructionTokenizer {
    let lines = ["go to the red ball", "crawl under the bar"];
    let t = train_word_level(lines.iter(), 100).unwrap();
    let vocab = t.get_vocab_size(true);
    InstructionTokenizer::new(t, max_tokens, vocab)
}

#[test]
fn instructions_tokenize_with_unknown_words_and_truncation() {
    let tok = tokenizer(4);
    let unk = tok.tokenizer().token_to_id("[UNK]").unwrap();
    let red = tok.tokenizer().token_to_id("red").unwrap();
    assert_eq!(tok.encode("Go to the RED ball").unwrap().len(), 4, "truncated to max_tokens");
    assert_eq!(tok.encode("red zebra").unwrap(), vec![red, unk]);
    assert_eq!(tok.encode("").unwrap_err(), TokenizeError::Empty);
    assert_eq!(tok.encode(" \n\t ").unwrap_err(), TokenizeError::Empty);
    let huge = "red ".repeat(1 << 18); // 1 MiB
    assert!(huge.len() > MAX_INSTRUCTION_BYTES);
    assert_eq!(tok.encode(&huge).unwrap(), vec![red; 4]);
    // A multi-byte character straddling the cut does not panic.
    let wide = "é".repeat(MAX_INSTRUCTION_BYTES);
    assert_eq!(tok.encode(&wide).unwrap(), vec![unk]);
}

fn write_model_folder(dir: &std::path::Path) {
    let mut cfg = micro_config();
    let lines = moe_vla::fixtures::instruction_lines(moe_vla::fixtures::SAMPLE_INSTRUCTIONS);
    let tok = train_word_level(lines.iter(), 200).unwrap();
    cfg.text.vocab_size = tok.get_vocab_size(true);
    let (_, tensors) = init_model(&cfg, 0, &Device::Cpu).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    save_weights(&tensors, &dir.join("model.safetensors")).unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

#[test]
fn model_folders_load_and_report_problems() {
    let dir = tempfile::tempdir().unwrap();
    write_model_folder(dir.path());
    let mut policy = Policy::load(dir.path(), &Device::Cpu).unwrap();
    let data = picture(64, 48, 0);
    let out = policy.decide(&Frame::Raw(RawFrame::packed(64, 48, PixelEncoding::Rgb8, &data)), "stop", 0.0, Decoding::Cached);
    assert!(out.is_ok());

    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    assert!(matches!(Policy::load(dir.path(), &Device::Cpu), Err(PolicyError::MissingFile { file: "tokenizer.json", .. })));
    write_model_folder(dir.path());
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
    assert!(matches!(Policy::load(dir.path(), &Device::Cpu), Err(PolicyError::Tokenizer { .. })));
    write_model_folder(dir.path());
    std::fs::write(dir.path().join("config.json"), "{\"image_size\": 32}").unwrap();
    assert!(matches!(Policy::load(dir.path(), &Device::Cpu), Err(PolicyError::Config { .. })));
    write_model_folder(dir.path());
    std::fs::write(dir.path().join("model.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(matches!(Policy::load(dir.path(), &Device::Cpu), Err(PolicyError::Model(_))));
}

#[test]
fn bad_input_is_an_error_and_leaves_the_history_alone() {
    let mut p = policy(micro_config(), 4);
    let good = picture(30, 20, 0);
    let frame = Frame::Raw(RawFrame::packed(30, 20, PixelEncoding::Rgb8, &good));
    let first = p.decide(&frame, "go to the red ball", period_stamp(0), Decoding::Cached).unwrap();
    let bad_frames: [Frame; 3] = [
        Frame::Raw(RawFrame::packed(30, 21, PixelEncoding::Rgb8, &good)),
        Frame::Raw(RawFrame::packed(0, 0, PixelEncoding::Rgb8, &[])),
        Frame::Compressed(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, 1, 2, 3]),
    ];
    for bad in &bad_frames {
        assert!(matches!(p.decide(bad, "go to the red ball", period_stamp(1), Decoding::Cached), Err(PolicyError::Image(_))));
    }
    assert!(matches!(
        p.decide(&frame, "   ", period_stamp(1), Decoding::Cached),
        Err(PolicyError::Instruction(TokenizeError::Empty))
    ));
    for stamp in [f64::NAN, f64::INFINITY] {
        assert!(matches!(p.decide(&frame, "go to the red ball", stamp, Decoding::Cached), Err(PolicyError::Stamp(_))));
    }
    // The rejected inputs did not enter the history: a second policy that never saw them agrees.
    let mut clean = policy(micro_config(), 4);
    clean.decide(&frame, "go to the red ball", period_stamp(0), Decoding::Cached).unwrap();
    let a = p.decide(&frame, "go to the red ball", period_stamp(1), Decoding::Cached).unwrap();
    let b = clean.decide(&frame, "go to the red ball", period_stamp(1), Decoding::Cached).unwrap();
    assert_eq!(a.bins, b.bins);
    assert_eq!(p.history_stamps(), [period_stamp(0), period_stamp(1)], "nor did their stamps");
    assert_eq!(first.bins.len(), 12);
}

#[test]
fn decisions_stay_inside_the_action_space() {
    let mut p = policy(micro_config(), 9);
    let space = p.action_space().clone();
    for t in 0..5 {
        let data = picture(40, 30, t);
        let out = p
            .decide(
                &Frame::Raw(RawFrame::packed(40, 30, PixelEncoding::Rgb8, &data)),
                "turn left",
                period_stamp(t),
                Decoding::Cached,
            )
            .unwrap();
        assert!(out.command.is_finite());
        for (d, v) in out.command.values.iter().enumerate() {
            let (lo, hi) = space.range(d);
            assert!(*v >= lo && *v <= hi);
        }
        assert!(out.bins[0] == 0 || out.bins[0] == 255, "terminate takes an extreme bin");
        assert!(out.q.iter().all(|q| (0.0..=1.0).contains(q)));
        assert!((out.expert_load.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn decisions_take_only_the_bins_the_training_data_supports() {
    let mut cfg = micro_config();
    // x_vel may take bins 100..=110 only, yaw_vel only bin 3 or 250, the rest one bin each.
    let mut supported = vec![vec![[128u32, 128]]; 12];
    supported[0] = vec![[0, 0], [255, 255]];
    supported[1] = vec![[100, 110]];
    supported[3] = vec![[3, 3], [250, 250]];
    cfg.actions.supported = Some(supported);
    for decoding in [Decoding::Cached, Decoding::Uncached] {
        let mut p = policy(cfg.clone(), 4);
        for t in 0..4 {
            let data = picture(32, 32, t);
            let out = p
                .decide(
                    &Frame::Raw(RawFrame::packed(32, 32, PixelEncoding::Rgb8, &data)),
                    "go to the red ball",
                    period_stamp(t),
                    decoding,
                )
                .unwrap();
            assert!((100..=110).contains(&out.bins[1]), "{decoding:?}: x_vel bin {}", out.bins[1]);
            assert!(out.bins[3] == 3 || out.bins[3] == 250, "{decoding:?}: yaw bin {}", out.bins[3]);
            assert!(out.bins[4..].iter().all(|&b| b == 128));
        }
    }
}

/// The camera's picture `t` seconds into a walk through `scenario`'s scene (forward at 0.4 m/s,
/// turning at 0.3 rad/s): a function of the time alone, however often the camera samples it.
fn scene_at(scenario: &Scenario, t: f64) -> Vec<u8> {
    let start = scenario.start;
    let t = t as f32;
    let pose = Pose {
        x: start.x + 0.4 * t * start.yaw.cos(),
        y: start.y + 0.4 * t * start.yaw.sin(),
        yaw: start.yaw + 0.3 * t,
        height: start.height,
    };
    render(&scenario.scene, &pose, 32, 32)
}

/// What a policy did at one frame: the frame's stamp, its decision and the history's stamps after it.
type Step = (f64, Decision, Vec<f64>);

/// `seconds` of `scenario` seen by a `fps` camera, decided on frame by frame.
fn decide_stream(p: &mut Policy, scenario: &Scenario, fps: u32, seconds: u32, decoding: Decoding) -> Vec<Step> {
    (0..fps * seconds)
        .map(|k| {
            // Correctly rounded, so 6 / 30 and 1 / 5 are the same f64: the period's frames carry
            // the same stamps at every rate.
            let t = f64::from(k) / f64::from(fps);
            let pixels = scene_at(scenario, t);
            let frame = Frame::Raw(RawFrame::packed(32, 32, PixelEncoding::Rgb8, &pixels));
            let decision = p.decide(&frame, &scenario.instruction, t, decoding).unwrap();
            (t, decision, p.history_stamps())
        })
        .collect()
}

#[test]
fn the_same_scene_at_5_10_and_30_fps_fills_the_history_alike_and_decides_alike_on_the_period() {
    let scenario = sample_task(TaskFamily::GoThrough, false, &mut rand::rngs::StdRng::seed_from_u64(3)).unwrap();
    let mut streaming = micro_config();
    streaming.decoder = moe_vla::model::DecoderKind::Streaming;
    for (name, cfg) in [("full", micro_config()), ("streaming", streaming)] {
        assert_eq!(cfg.frame_period_s, 0.2);
        for decoding in [Decoding::Cached, Decoding::Uncached] {
            let runs: Vec<(u32, Vec<Step>)> = [5, 10, 30]
                .into_iter()
                .map(|fps| (fps, decide_stream(&mut policy(cfg.clone(), 5), &scenario, fps, 3, decoding)))
                .collect();
            let (_, at_period) = &runs[0];
            assert_eq!(at_period.len(), 15);
            for (j, (t, _, history)) in at_period.iter().enumerate() {
                // At the period every frame joins: the newest `history` frames up to this one.
                let expected: Vec<f64> = (j.saturating_sub(cfg.history - 1)..=j).map(|i| i as f64 / 5.0).collect();
                assert_eq!(history, &expected, "{name} {decoding:?} at {t} s");
            }
            for (fps, steps) in &runs[1..] {
                let per_period = (fps / 5) as usize;
                assert_eq!(steps.len(), 15 * per_period);
                for (k, (t, decision, history)) in steps.iter().enumerate() {
                    let (j, between) = (k / per_period, k % per_period);
                    let (period_t, period_decision, period_history) = &at_period[j];
                    let at = format!("{name} {decoding:?} {fps} fps, frame {k} ({t} s)");
                    // (a) The frames between the period's are decided on but not kept.
                    assert_eq!(history, period_history, "{at}");
                    if between == 0 {
                        // (b) The period's frames are decided on exactly as at 5 fps.
                        assert_eq!(t, period_t, "{at}");
                        assert_eq!(decision.bins, period_decision.bins, "{at}");
                        assert_eq!(decision.q, period_decision.q, "{at}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_stamp_going_backwards_restarts_the_history() {
    let scenario = sample_task(TaskFamily::GoTo, false, &mut rand::rngs::StdRng::seed_from_u64(8)).unwrap();
    let decide = |p: &mut Policy, t: f64| {
        let pixels = scene_at(&scenario, t);
        p.decide(&Frame::Raw(RawFrame::packed(32, 32, PixelEncoding::Rgb8, &pixels)), &scenario.instruction, t, Decoding::Cached)
            .unwrap()
    };
    let mut looped = policy(micro_config(), 2);
    for k in 0..5 {
        decide(&mut looped, period_stamp(k));
    }
    assert_eq!(looped.history_stamps(), [period_stamp(2), period_stamp(3), period_stamp(4)]);
    // The bag loops: its first frame again.
    let again = decide(&mut looped, period_stamp(0));
    assert_eq!(looped.history_stamps(), [period_stamp(0)]);
    let fresh = decide(&mut policy(micro_config(), 2), period_stamp(0));
    assert_eq!((again.bins, again.q), (fresh.bins, fresh.q), "nothing from before the loop is left");
}
