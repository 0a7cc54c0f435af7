use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::data::{n_step, Batch, Batcher, Dataset, Episode, Observations, Topics};
use super::objective::{bc_loss, expectile, mask_tensor, q_loss, q_targets, successes, successes_cross_entropy, Bootstrap};
use super::*;
use crate::action::{ActionSpace, GaitFields, PlanarTwist};
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, Header, Image, StringMsg, Time, Twist, Vector3, VlaDecision};
use crate::bag::BagReader;
use crate::bag::{BagWriter, TopicQos};
use crate::model::{is_instruction_weight, HistoryRing, VlaConfig};
use crate::model::{
    EncodedObservation, ExpertAct, FeedForwardConfig, FeedForwardKind, ObservationBatch, TextInput, VisionConfig, VisionKind,
};
use crate::policy::tokenize::train_word_level;
use crate::policy::{InstructionTokenizer, WEIGHTS_FILE};
use crate::topics;

/// A network small enough to train in a debug test.
fn micro() -> VlaConfig {
    let mut cfg = VlaConfig::tiny();
    cfg.image_size = 16;
    cfg.history = 2;
    cfg.tokens_per_frame = 4;
    cfg.vision = VisionConfig { kind: VisionKind::FilmConv, channels: vec![8, 16], patch_size: 0, token_learner_hidden: 16 };
    cfg.text.vocab_size = 32;
    cfg.text.max_tokens = 8;
    cfg.text.ffn_hidden = 32;
    cfg.d_model = 32;
    cfg.layers = 2;
    cfg.heads = 2;
    cfg.ffn = FeedForwardConfig {
        kind: FeedForwardKind::Moe,
        experts: 4,
        top_k: 2,
        hidden: 32,
        expert_act: ExpertAct::Germ,
        lora_rank: 0,
    };
    cfg
}

fn t2(rows: &[&[f32]]) -> Tensor {
    let cols = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), cols), &Device::Cpu).unwrap()
}

#[test]
fn targets_match_a_hand_computed_two_step_episode() {
    // 3 dimensions of 4 bins; dimension 0 (terminate) may only take bins 0 and 3.
    let masks = vec![vec![true, false, false, true], vec![true; 4], vec![true; 4]];
    let mask = mask_tensor(&masks, &Device::Cpu).unwrap();
    // Row 0 is step t = 0 of a successful two-step episode, row 1 its final step t = 1.
    let q_target = Tensor::stack(
        &[
            t2(&[&[0.9, 0.95, 0.95, 0.2], &[0.1, 0.3, 0.2, 0.4], &[0.5, 0.6, 0.7, 0.1]]),
            t2(&[&[0.3, 0.99, 0.99, 0.4], &[0.2, 0.25, 0.1, 0.05], &[0.8, 0.1, 0.1, 0.1]]),
        ],
        0,
    )
    .unwrap();
    // Dimension 0 at s_{t+1}: row 0 sees s_1, row 1 has no successor (masked by not_done).
    let q_next = t2(&[&[0.6, 0.99, 0.99, 0.7], &[0.9, 0.9, 0.9, 0.9]]);
    // One-step returns: row 0 bootstraps with gamma = 0.9, row 1 ends with reward 1.
    let return_n = Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap();
    let discount = Tensor::new(&[0.9f32, 0.0], &Device::Cpu).unwrap();
    let mc = Tensor::new(&[0.9f32, 1.0], &Device::Cpu).unwrap(); // gamma^(T - t) * success
    let boot = Bootstrap { return_n: &return_n, discount: &discount, mc_return: &mc };
    let targets = q_targets(&q_target, &q_next, &mask, &boot).unwrap();
    let got = targets.to_vec2::<f32>().unwrap();
    // t = 0: dim 0 <- max Q[1] = 0.4, raised to MC 0.9; dim 1 <- max Q[2] = 0.7 -> 0.9;
    //        dim 2 <- 0 + 0.9 * max over the valid bins {0, 3} of q_next = 0.9 * 0.7 = 0.63 -> 0.9.
    // t = 1: dim 0 <- 0.25 -> 1.0; dim 1 <- 0.8 -> 1.0; dim 2 <- reward 1.
    let expected = [[0.9f32, 0.9, 0.9], [1.0, 1.0, 1.0]];
    for (g, e) in got.iter().zip(expected) {
        for (a, b) in g.iter().zip(e) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
    }
    // Without the Monte-Carlo bound (a failed episode) the bootstrapped values show through, and
    // the invalid terminate bins (0.99) are never used.
    let zero = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let boot = Bootstrap { return_n: &zero, discount: &discount, mc_return: &zero };
    let targets = q_targets(&q_target, &q_next, &mask, &boot).unwrap();
    let got = targets.to_vec2::<f32>().unwrap();
    let expected = [[0.4f32, 0.7, 0.63], [0.25, 0.8, 0.0]];
    for (g, e) in got.iter().zip(expected) {
        for (a, b) in g.iter().zip(e) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
    }
}

/// Standard-normal values of `shape` from a seeded generator: tests that compare runs within a
/// tolerance see the same inputs every time (candle's `randn` draws from an unseeded one).
fn seeded_normal(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// A fixed synthetic batch for `cfg`.
fn synthetic_batch(cfg: &VlaConfig, b: usize) -> Batch {
    let dev = Device::Cpu;
    let s = cfg.image_size;
    let obs = |frame_seed: u64| ObservationBatch {
        text: TextInput::Ids(Tensor::new(&[[2u32, 3, 4]], &dev).unwrap().repeat((b, 1)).unwrap()),
        text_valid: None,
        frames: seeded_normal(&[b, cfg.history, 3, s, s], frame_seed),
    };
    let bins: Vec<u32> =
        (0..b * cfg.action_dims()).map(|i| if i % cfg.action_dims() == 0 { 0 } else { (i * 37 % 256) as u32 }).collect();
    Batch {
        obs: Observations::Pixels(obs(1)),
        next: Observations::Pixels(obs(2)),
        bins: Tensor::from_vec(bins, (b, cfg.action_dims()), &dev).unwrap(),
        return_n: Tensor::zeros(b, DType::F32, &dev).unwrap(),
        discount: Tensor::full(0.99f32, b, &dev).unwrap(),
        mc_return: Tensor::zeros(b, DType::F32, &dev).unwrap(),
    }
}

fn pixels(obs: &Observations) -> &ObservationBatch {
    match obs {
        Observations::Pixels(p) => p,
        Observations::Encoded(_) => panic!("expected pixels"),
    }
}

/// Mean Q over the valid bins the batch's actions did not take.
fn unseen_q(trainer: &Trainer, batch: &Batch) -> f32 {
    let dims = trainer.config().action_dims();
    let logits = trainer.online.forward(pixels(&batch.obs), &batch.bins.narrow(1, 0, dims - 1).unwrap()).unwrap().0;
    let q = candle_nn::ops::sigmoid(&logits).unwrap();
    let hot = super::objective::one_hot(&batch.bins, q.dim(2).unwrap()).unwrap();
    let other = hot.affine(-1.0, 1.0).unwrap().broadcast_mul(&trainer.valid_mask).unwrap();
    let total = (q * &other).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    total / other.sum_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn targets_start_near_zero_on_an_untrained_model() {
    // Before any data the bootstrapped max over 256 bins must be pessimistic: with candle's default
    // Q-head init it sat near 0.98 and every dimension but the last learned a constant near 1.
    let cfg = VlaConfig::tiny();
    let batch = synthetic_batch(&cfg, 4);
    let trainer = Trainer::new(&cfg, &TrainOptions::default(), &Device::Cpu).unwrap();
    let dims = cfg.action_dims();
    let logits = trainer.online.forward(pixels(&batch.obs), &batch.bins.narrow(1, 0, dims - 1).unwrap()).unwrap().0;
    let q = candle_nn::ops::sigmoid(&logits).unwrap();
    let empty = Tensor::zeros((4, 0), DType::U32, &Device::Cpu).unwrap();
    let q_next =
        candle_nn::ops::sigmoid(&trainer.online.forward(pixels(&batch.next), &empty).unwrap().0).unwrap().squeeze(1).unwrap();
    let boot = Bootstrap { return_n: &batch.return_n, discount: &batch.discount, mc_return: &batch.mc_return };
    let targets = q_targets(&q, &q_next, &trainer.supported_mask, &boot).unwrap();
    let max = targets.max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(max < 0.05, "an untrained model's targets reach {max}");
}

#[test]
fn conservative_term_lowers_unseen_bins() {
    // Two hundred updates on a small fixed dataset: at the default weight the bins the data did
    // not take end clearly lower than without the term.
    let cfg = micro();
    let batch = synthetic_batch(&cfg, 4);
    let run = |alpha: f64| {
        let opts = TrainOptions {
            steps: 200,
            warmup: 1,
            alpha,
            beta: 0.0,
            adamw: AdamWConfig { lr: 3e-3, ..Default::default() },
            ..Default::default()
        };
        let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
        let before = unseen_q(&trainer, &batch);
        for _ in 0..200 {
            trainer.update(&batch).unwrap();
        }
        (before, unseen_q(&trainer, &batch))
    };
    let (before, without) = run(0.0);
    let (same_start, with) = run(DEFAULT_ALPHA);
    assert_eq!(before, same_start, "both runs start from the same weights");
    assert!(with < 0.5 * without, "at the default weight unseen bins reach {with}, without the term {without}");
}

/// Per (sample, dimension), the argmax bin of `logits` [B, dims, bins] over the valid bins.
fn greedy_bins(trainer: &Trainer, logits: &Tensor) -> Vec<Vec<u32>> {
    let rows = logits.to_vec3::<f32>().unwrap();
    rows.iter()
        .map(|sample| sample.iter().zip(&trainer.valid).map(|(row, valid)| crate::model::masked_argmax(row, valid).0).collect())
        .collect()
}

/// Options under which a micro model's behaviour head learns a batch within a few hundred updates:
/// a quick learning rate, no conservative or balance term.
fn behaviour_learning() -> TrainOptions {
    TrainOptions { warmup: 1, alpha: 0.0, beta: 0.0, adamw: AdamWConfig { lr: 3e-3, ..Default::default() }, ..Default::default() }
}

#[test]
fn the_behaviour_filter_keeps_the_argmax_on_the_bins_the_data_takes() {
    // Every recorded step failed (return 0) and there is no conservative term, so Q learns that
    // the data's bins are worth nothing and stays at its initial guess elsewhere: the plain argmax
    // leaves the data. The behaviour head learns which bins the data took, and its filter keeps
    // the argmax on them.
    let mut cfg = micro();
    cfg.behaviour_filter = Some(0.3);
    // As training data would have it: the terminate flag takes its extremes, the rest any bin.
    let mut supported = vec![vec![[0, 255]]; cfg.action_dims()];
    supported[0] = vec![[0, 0], [255, 255]];
    cfg.actions.supported = Some(supported);
    let batch = synthetic_batch(&cfg, 4);
    let opts = TrainOptions { steps: 150, ..behaviour_learning() };
    let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    let first = trainer.update(&batch).unwrap().behaviour;
    let mut last = first;
    for _ in 1..150 {
        last = trainer.update(&batch).unwrap().behaviour;
    }
    assert!(last < 0.2 * first, "the behaviour head's cross-entropy went from {first} to {last}");

    let dims = cfg.action_dims();
    let prefix = batch.bins.narrow(1, 0, dims - 1).unwrap();
    let data = batch.bins.to_vec2::<u32>().unwrap();
    let plain = trainer.online.forward_train(&batch.obs.encode(&trainer.online).unwrap(), &prefix).unwrap().q;
    let filtered = trainer.online.forward(pixels(&batch.obs), &prefix).unwrap().0;
    let agree = |greedy: Vec<Vec<u32>>| -> usize {
        greedy.iter().zip(&data).map(|(g, d)| g.iter().zip(d).filter(|(g, d)| g == d).count()).sum()
    };
    let total = data.len() * dims;
    let (plain, filtered) = (agree(greedy_bins(&trainer, &plain)), agree(greedy_bins(&trainer, &filtered)));
    assert_eq!(filtered, total, "the filtered argmax is the data's bin in {filtered} of {total} cases");
    assert!(plain < total / 2, "without the filter the argmax is the data's bin in {plain} of {total} cases");
}

#[test]
fn a_behaviour_head_on_successes_learns_only_what_the_successful_rows_did() {
    // Learning from every step, the behaviour head splits between the two rows' bins; learning
    // from successes, it takes bin 10.
    let (cfg, batch) = rows_that_part_after_the_same_frames();
    let dims = cfg.action_dims();
    let prefix = batch.bins.narrow(1, 0, dims - 1).unwrap();
    for successes_only in [false, true] {
        let opts = TrainOptions { behaviour_successes_only: successes_only, ..behaviour_learning() };
        let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
        for _ in 0..100 {
            trainer.update(&batch).unwrap();
        }
        let out = trainer.online.forward_train(&batch.obs.encode(&trainer.online).unwrap(), &prefix).unwrap();
        let probs = candle_nn::ops::softmax(&out.behaviour.unwrap(), candle_core::D::Minus1).unwrap();
        // Dimension 1 of row 0: both rows' inputs up to it are the same.
        let p = probs.get(0).unwrap().get(1).unwrap().to_vec1::<f32>().unwrap();
        let ratio = p[10] / p[200];
        if successes_only {
            assert!(ratio > 20.0, "on successes, bin 10 is only {ratio} times as likely as the failed row's bin 200");
        } else {
            assert!((0.33..3.0).contains(&ratio), "on every step, bin 10 is {ratio} times as likely as bin 200");
        }
    }
    let opts = TrainOptions { behaviour_successes_only: true, ..Default::default() };
    let err = Trainer::new(&micro(), &opts, &Device::Cpu).err().expect("no behaviour head to train");
    assert!(err.to_string().contains("--behaviour-filter"), "{err}");
}

/// A model with a behaviour head and a batch of two rows that see the same frames and take the
/// same terminate bin, then part ways in the next dimension: row 0 (successful, return 0.9) takes
/// bin 10, row 1 (failed) bin 200.
fn rows_that_part_after_the_same_frames() -> (VlaConfig, Batch) {
    let mut cfg = micro();
    cfg.behaviour_filter = Some(0.3);
    let mut batch = synthetic_batch(&cfg, 2);
    let one = pixels(&batch.obs).frames.narrow(0, 0, 1).unwrap();
    let frames = Tensor::cat(&[&one, &one], 0).unwrap();
    batch.obs = Observations::Pixels(ObservationBatch { frames, ..pixels(&batch.obs).clone() });
    let dims = cfg.action_dims();
    let mut bins = vec![0u32; 2 * dims];
    (bins[1], bins[dims + 1]) = (10, 200);
    batch.bins = Tensor::from_vec(bins, (2, dims), &Device::Cpu).unwrap();
    batch.mc_return = Tensor::new(&[0.9f32, 0.0], &Device::Cpu).unwrap();
    (cfg, batch)
}

#[test]
fn a_run_can_start_from_a_trained_models_encoders_and_a_fresh_decoder() {
    let cfg = micro();
    let opts = TrainOptions { seed: 1, ..Default::default() };
    let trained = Trainer::new(&cfg, &TrainOptions { seed: 2, ..Default::default() }, &Device::Cpu).unwrap().weights();
    let trained: std::collections::HashMap<String, Tensor> = trained.into_iter().collect();
    let fresh = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap().weights();
    let started = Trainer::with_encoders_from(&cfg, &opts, &trained, &Device::Cpu).unwrap().weights();
    let same = |a: &Tensor, b: &Tensor| {
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap() == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let (mut encoders, mut changed) = (0, 0);
    for (name, weight) in &started {
        if Trainer::ENCODER_PREFIXES.iter().any(|p| name.starts_with(p)) {
            encoders += 1;
            assert!(same(weight, &trained[name]), "{name} is not the trained model's");
            changed += usize::from(!same(weight, &fresh[name]));
        } else {
            assert!(same(weight, &fresh[name]), "{name} is not this run's fresh weight");
        }
    }
    assert!(encoders > 4 && encoders < started.len(), "{encoders} of {} weights", started.len());
    assert!(changed > encoders / 2, "only {changed} of {encoders} encoder weights differ from a fresh run's");
    // Another architecture's encoders are refused by name.
    let mut wider = cfg.clone();
    wider.vision.channels = vec![8, 24];
    let err = Trainer::with_encoders_from(&wider, &opts, &trained, &Device::Cpu).err().expect("a shape mismatch");
    assert!(err.to_string().contains("in this architecture"), "{err}");
}

#[test]
fn an_expectile_is_the_mean_at_one_half_and_nears_the_best_likely_bin_towards_one() {
    let q = Tensor::new(&[[[0.1f32, 0.5, 0.9, 0.99]]], &Device::Cpu).unwrap();
    // The last bin has the highest Q but the policy never takes it.
    let p = Tensor::new(&[[[0.25f32, 0.25, 0.5, 0.0]]], &Device::Cpu).unwrap();
    let at = |tau: f64| expectile(&q, &p, tau).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    assert!((at(0.5) - 0.6).abs() < 1e-6, "{}", at(0.5));
    assert!(at(0.99) > 0.89 && at(0.99) <= 0.9, "{}", at(0.99));
    // tau E[(q - m)+] = (1 - tau) E[(m - q)+]
    let (tau, m) = (0.8f32, at(0.8));
    let (qs, ps) = ([0.1f32, 0.5, 0.9, 0.99], [0.25f32, 0.25, 0.5, 0.0]);
    let above: f32 = qs.iter().zip(ps).map(|(q, p)| p * (q - m).max(0.0)).sum();
    let below: f32 = qs.iter().zip(ps).map(|(q, p)| p * (m - q).max(0.0)).sum();
    assert!((tau * above - (1.0 - tau) * below).abs() < 1e-6, "m {m}: {above} above, {below} below");
    assert!(at(0.6) < at(0.7) && at(0.7) < m, "expectiles rise with tau");
}

#[test]
fn an_iql_policy_copies_the_successful_rows_choice_and_not_the_failed_ones() {
    // Cloning every step splits between the two rows' bins (see the behaviour-head test); the
    // advantage-weighted policy learns that bin 10 did better.
    let (cfg, mut batch) = rows_that_part_after_the_same_frames();
    let dims = cfg.action_dims();
    // Both episodes ended here: row 0 with success, row 1 without.
    batch.return_n = batch.mc_return.clone();
    batch.discount = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    let opts = TrainOptions { objective: Objective::Iql, tau: 0.9, ..behaviour_learning() };
    let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    for _ in 0..200 {
        let stats = trainer.update(&batch).unwrap();
        assert_eq!(stats.conservative, 0.0);
    }
    let prefix = batch.bins.narrow(1, 0, dims - 1).unwrap();
    let out = trainer.online.forward_train(&batch.obs.encode(&trainer.online).unwrap(), &prefix).unwrap();
    let q = candle_nn::ops::sigmoid(&out.q).unwrap().to_vec3::<f32>().unwrap();
    // (Row 1's value reaches dimension 1 through the later dimensions' targets, a lag each.)
    assert!(q[0][1][10] > 0.7 && q[1][1][200] < 0.5, "Q of bin 10: {}, of bin 200: {}", q[0][1][10], q[1][1][200]);
    let probs = candle_nn::ops::softmax(&out.behaviour.unwrap(), candle_core::D::Minus1).unwrap();
    let p = probs.get(0).unwrap().get(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(p[10] / p[200] > 20.0, "bin 10 is only {} times as likely as the failed row's bin 200", p[10] / p[200]);

    let err = Trainer::new(&micro(), &opts, &Device::Cpu).err().expect("no policy head to train");
    assert!(err.to_string().contains("--behaviour-filter"), "{err}");
}

#[test]
fn a_behaviour_filter_round_trips_through_config_json_and_must_be_a_share() {
    let mut cfg = micro();
    assert!(!serde_json::to_string(&cfg).unwrap().contains("behaviour_filter"), "absent unless set");
    cfg.behaviour_filter = Some(0.3);
    let back: VlaConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back.behaviour_filter, Some(0.3));
    let (_, weights) = crate::model::init_model(&cfg, 0, &Device::Cpu).unwrap();
    assert!(weights.contains_key("behaviour_head.weight"), "{:?}", weights.keys().collect::<Vec<_>>());
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        cfg.behaviour_filter = Some(bad);
        assert!(cfg.validate().is_err(), "behaviour_filter {bad} was accepted");
    }
}

#[test]
fn self_imitation_is_the_cross_entropy_of_successful_samples_only() {
    // 2 samples, 2 dimensions of 3 bins; bin 2 of dimension 1 is not a valid choice.
    let masks = mask_tensor(&[vec![true; 3], vec![true, true, false]], &Device::Cpu).unwrap();
    let logits = |failed_row: f32| {
        let rows = [0.0, (2f32).ln(), 0.0, 0.0, 0.0, 9.0, failed_row, 0.0, 0.0, 0.0, 0.0, 0.0];
        Tensor::from_vec(rows.to_vec(), (2, 2, 3), &Device::Cpu).unwrap()
    };
    let bins = Tensor::from_vec(vec![1u32, 0, 0, 1], (2, 2), &Device::Cpu).unwrap();
    let returns = |first: f32, second: f32| Tensor::new(&[first, second], &Device::Cpu).unwrap();
    let loss = |l: &Tensor, r: &Tensor| {
        successes_cross_entropy(l, &bins, &masks, r, successes(r).unwrap()).unwrap().to_scalar::<f32>().unwrap()
    };
    // Sample 0 succeeded: dimension 0 takes bin 1 at probability 2/4, dimension 1 bin 0 at 1/2
    // (the invalid bin's logit 9 does not count). The mean over dimensions is ln 2.
    let expected = (2f32).ln();
    assert!((loss(&logits(0.0), &returns(0.5, 0.0)) - expected).abs() < 1e-5);
    // The failed sample neither counts nor dilutes the mean, whatever its logits.
    assert!((loss(&logits(7.0), &returns(0.5, 0.0)) - expected).abs() < 1e-5);
    // A batch without successes contributes nothing.
    assert_eq!(loss(&logits(0.0), &returns(0.0, 0.0)), 0.0);
}

#[test]
fn n_step_returns_match_a_hand_computed_episode() {
    // An episode of 6 steps (T = 5), gamma 0.5, n = 3.
    let (g, n) = (0.5, 3);
    // t = 0: s_3 exists, nothing is earned inside the 3 steps; MC return 0.5^5.
    assert_eq!(n_step(0, 5, true, false, g, n), (3, 0.0, 0.125, 0.03125));
    // t = 2: s_5 (the final step) exists; still no reward before it.
    assert_eq!(n_step(2, 5, true, false, g, n), (5, 0.0, 0.125, 0.125));
    // t = 3: the episode ends within 3 steps: the return is 0.5^2 and nothing is bootstrapped.
    assert_eq!(n_step(3, 5, true, false, g, n), (5, 0.25, 0.0, 0.25));
    assert_eq!(n_step(5, 5, true, false, g, n), (5, 1.0, 0.0, 1.0));
    // A failed episode earns nothing but still bootstraps where s_{t+n} exists.
    assert_eq!(n_step(1, 5, false, false, g, n), (4, 0.0, 0.125, 0.0));
    assert_eq!(n_step(4, 5, false, false, g, n), (5, 0.0, 0.0, 0.0));
    // n = 1 is the one-step target.
    assert_eq!(n_step(4, 5, true, false, g, 1), (5, 0.0, 0.5, 0.5));
    // A timed-out episode (no success) cut short rather than ended: where the n steps reach past
    // its end, the target bootstraps from its last observation instead of being 0.
    assert_eq!(n_step(3, 5, false, true, g, n), (5, 0.0, 0.25, 0.0));
    assert_eq!(n_step(5, 5, false, true, g, n), (5, 0.0, 0.5, 0.0));
    assert_eq!(n_step(1, 5, false, true, g, n), (4, 0.0, 0.125, 0.0), "inside the episode nothing changes");
}

#[test]
fn optimizer_and_target_state_hold_no_graph() {
    // A moment or target tensor that kept its autograd graph would keep every earlier step's
    // graph alive: memory would grow without bound over a long run.
    let cfg = micro();
    let batch = synthetic_batch(&cfg, 2);
    let mut trainer = Trainer::new(&cfg, &TrainOptions::default(), &Device::Cpu).unwrap();
    for _ in 0..2 {
        trainer.update(&batch).unwrap();
    }
    for (name, t) in trainer.optimizer.state().iter().chain(trainer.target.iter()) {
        assert!(!t.track_op(), "{name} carries an autograd graph");
    }
}

#[test]
fn every_parameter_receives_a_gradient() {
    let mut cfg = micro();
    cfg.behaviour_filter = Some(0.3);
    let batch = synthetic_batch(&cfg, 3);
    let opts = TrainOptions::default();
    let trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    let dims = cfg.action_dims();
    let obs = batch.obs.encode(&trainer.online).unwrap();
    let out = trainer.online.forward_train(&obs, &batch.bins.narrow(1, 0, dims - 1).unwrap()).unwrap();
    let targets = Tensor::ones((3, dims), DType::F32, &Device::Cpu).unwrap();
    let parts = q_loss(&out.q, &batch.bins, &targets, &trainer.valid_mask).unwrap();
    let behaviour = bc_loss(&out.behaviour.unwrap(), &batch.bins, &trainer.valid_mask).unwrap();
    let loss = (parts.td + parts.conservative + behaviour + out.balance).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in &trainer.vars {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        // A text position the 3-token instruction never uses and bins no data took get none.
        if name == "text.positions" || name.starts_with("bin_embedding") {
            continue;
        }
        assert!(norm > 0.0, "{name} has a zero gradient");
    }
}

const SIZE: u32 = 16;

/// Writes a bag of `episodes` synthetic episodes: the frame colour says which way to turn.
fn write_bag(dir: &Path, episodes: usize) {
    write_episodes(dir, episodes, None);
}

/// `write_bag`, plus (with `decided_yaw`) a decision after every frame: the commands' bins with
/// yaw_vel replaced by that bin.
fn write_episodes(dir: &Path, episodes: usize, decided_yaw: Option<u32>) {
    let space = ActionSpace::new(&micro().actions).unwrap();
    let mut bag = BagWriter::create(dir).unwrap();
    bag.add_topic::<VlaDecision>("/moe_vla_node/decision", TopicQos::Reliable).unwrap();
    bag.add_topic::<Image>("/camera/image_raw", TopicQos::SensorData).unwrap();
    bag.add_topic::<StringMsg>("/instruction", TopicQos::Latched).unwrap();
    bag.add_topic::<Twist>("/cmd_vel", TopicQos::Reliable).unwrap();
    bag.add_topic::<GaitCommand>("/gait_command", TopicQos::Reliable).unwrap();
    bag.add_topic::<EpisodeOutcome>("/moe_vla/episode", TopicQos::Reliable).unwrap();
    let mut t = 1_000_000_000u64;
    for e in 0..episodes {
        let left = e % 2 == 0;
        bag.write("/instruction", t, &StringMsg { data: "turn to the light".into() }).unwrap();
        for step in 0..5u32 {
            t += 200_000_000;
            let header = Header {
                stamp: Time { sec: (t / 1_000_000_000) as i32, nanosec: (t % 1_000_000_000) as u32 },
                frame_id: "camera".into(),
            };
            let colour = if left { [250u8, 20, 20] } else { [20u8, 20, 250] };
            let data =
                colour.iter().copied().cycle().take((SIZE * SIZE * 3) as usize).map(|c| c.saturating_add(step as u8)).collect();
            let image =
                Image { header, height: SIZE, width: SIZE, encoding: "rgb8".into(), is_bigendian: 0, step: SIZE * 3, data };
            bag.write("/camera/image_raw", t, &image).unwrap();
            let yaw = if left { 0.8 } else { -0.8 };
            let gait = GaitFields {
                body_height: -0.1,
                step_frequency: 3.0,
                phase_offsets: [0.5, 0.0, 0.0],
                footswing_height: 0.1,
                pitch: 0.0,
                stance_width: 0.3,
            };
            if let Some(bin) = decided_yaw {
                let twist = PlanarTwist { x_vel: 0.5, y_vel: 0.0, yaw_vel: yaw as f32 };
                let mut bins = space.encode_command(false, twist, gait);
                bins[space.index_of("yaw_vel").unwrap()] = bin;
                bag.write("/moe_vla_node/decision", t + 500_000, &VlaDecision { bins, ..Default::default() }).unwrap();
            }
            let twist = Twist { linear: Vector3 { x: 0.5, y: 0.0, z: 0.0 }, angular: Vector3 { x: 0.0, y: 0.0, z: yaw } };
            bag.write("/cmd_vel", t + 1_000_000, &twist).unwrap();
            bag.write("/gait_command", t + 1_000_000, &GaitCommand::from_fields(&gait, Header::default())).unwrap();
        }
        let outcome = EpisodeOutcome {
            family: "synthetic".into(),
            instruction: "turn to the light".into(),
            success: left,
            reason: if left { "reached".into() } else { "timeout".into() },
            terminated: false,
            steps: 5,
            ..Default::default()
        };
        bag.write("/moe_vla/episode", t + 2_000_000, &outcome).unwrap();
        t += 1_000_000_000;
    }
    bag.finish().unwrap();
}

/// A word-level tokenizer sized for `micro()` (the instruction `write_bag` records).
fn micro_tokenizer() -> InstructionTokenizer {
    InstructionTokenizer::new(train_word_level(["turn to the light"].iter(), 32).unwrap(), 8, 32)
}

fn load(dir: &Path, cfg: &VlaConfig) -> Dataset {
    let space = ActionSpace::new(&cfg.actions).unwrap();
    Dataset::load(dir, &dir.join(".cache"), cfg.image_size, cfg.frame_period_s, &space, &Topics::default(), |_, _| {}).unwrap()
}

#[test]
fn bags_become_episodes_with_rewards_and_bins() {
    let dir = tempfile::tempdir().unwrap();
    write_bag(&dir.path().join("bag"), 4);
    let cfg = micro();
    let data = load(dir.path(), &cfg);
    assert_eq!(data.episodes.len(), 4);
    assert_eq!(data.steps(), 20);
    assert_eq!(data.episodes.iter().filter(|e| e.success).count(), 2);
    let space = ActionSpace::new(&cfg.actions).unwrap();
    let yaw = space.index_of("yaw_vel").unwrap();
    let height = space.index_of("body_height").unwrap();
    assert!((space.decode(yaw, data.bins[0][yaw]) - 0.8).abs() < 0.01);
    assert!((space.decode(yaw, data.bins[5][yaw]) + 0.8).abs() < 0.01);
    assert!((space.decode(height, data.bins[3][height]) + 0.1).abs() < 0.01);
    assert_eq!(data.history(7, 3), vec![5, 6, 7]);
    assert_eq!(data.history(5, 3), vec![5, 5, 5], "the episode's first frame pads its start");
    // A second load reads the cache, not the bags.
    let again = load(dir.path(), &cfg);
    assert_eq!(again.bins, data.bins);
    assert_eq!(again.frame(13), data.frame(13));

    let tokenizer = micro_tokenizer();
    let batcher = Batcher::new(&data, &tokenizer.clone().into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let batch = batcher.batch(&[4, 9, 0], 0.9, 1, false).unwrap();
    assert_eq!(batch.return_n.to_vec1::<f32>().unwrap(), vec![1.0, 0.0, 0.0]);
    assert_eq!(batch.discount.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 0.9]);
    let mc = batch.mc_return.to_vec1::<f32>().unwrap();
    assert_eq!(mc[0], 1.0);
    assert_eq!(mc[1], 0.0, "failed episodes have no return");
    assert!((mc[2] - 0.9f32.powi(4)).abs() < 1e-6);
    assert_eq!(pixels(&batch.obs).frames.dims(), &[3, 2, 3, 16, 16]);

    // The failed episodes timed out: with bootstrapped timeouts their last step bootstraps from
    // its own observation instead of ending there; a step inside the episode is unchanged.
    assert_eq!(data.episodes.iter().map(Episode::timed_out).collect::<Vec<_>>(), [false, true, false, true]);
    let cut_short = batcher.batch(&[9, 6, 4], 0.9, 1, true).unwrap();
    assert_eq!(cut_short.discount.to_vec1::<f32>().unwrap(), vec![0.9, 0.9, 0.0]);
    assert_eq!(cut_short.return_n.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 1.0]);

    // Sampling by episode weighs a 1-step episode like a 5-step one.
    let eligible: Vec<usize> = (0..5).chain([7]).collect();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let by_episode = data.sample_by_episode(&eligible, 4000, &mut rng);
    assert!(by_episode.iter().all(|s| eligible.contains(s)));
    let short = by_episode.iter().filter(|&&s| s == 7).count() as f64 / 4000.0;
    assert!((short - 0.5).abs() < 0.04, "{short}");
    let by_step = Dataset::sample_steps(&eligible, 4000, &mut rng);
    let short = by_step.iter().filter(|&&s| s == 7).count() as f64 / 4000.0;
    assert!((short - 1.0 / 6.0).abs() < 0.04, "{short}");
}

fn train_steps(trainer: &mut Trainer, batcher: &mut Batcher, eligible: &[usize], until: usize) -> Vec<StepStats> {
    let mut out = Vec::new();
    while trainer.step < until {
        let batch = trainer.next_batch(batcher, eligible, |_, _| {}).unwrap();
        out.push(trainer.update(&batch).unwrap());
    }
    out
}

#[test]
fn loss_falls_and_resume_gives_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    write_bag(&dir.path().join("bag"), 6);
    let cfg = micro();
    let data = load(dir.path(), &cfg);
    let tokenizer = micro_tokenizer();
    let batcher = || Batcher::new(&data, &tokenizer.clone().into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let eligible = data.step_indices(false);
    for objective in [Objective::Bc, Objective::Q] {
        let opts = TrainOptions {
            objective,
            steps: 40,
            batch_size: 8,
            warmup: 2,
            tau: 0.9,
            freeze_encoders_after: None,
            adamw: AdamWConfig { lr: 2e-3, ..Default::default() },
            ..Default::default()
        };
        let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
        let stats = train_steps(&mut trainer, &mut batcher(), &eligible, 40);
        let mean = |s: &[StepStats]| s.iter().map(|x| x.loss).sum::<f32>() / s.len() as f32;
        let (first, last) = (mean(&stats[..5]), mean(&stats[35..]));
        assert!(last < 0.7 * first, "{objective:?} loss did not fall: {first} -> {last}");
    }

    // Resume: 3 + 3 updates with a checkpoint in between equal 6 uninterrupted ones, bit for bit,
    // with the encoders frozen after update 2 (the resumed run re-encodes from its checkpoint).
    let opts =
        TrainOptions { steps: 6, batch_size: 4, warmup: 2, tau: 0.9, freeze_encoders_after: Some(2), ..Default::default() };
    let mut straight = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    train_steps(&mut straight, &mut batcher(), &eligible, 6);
    let mut first = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    train_steps(&mut first, &mut batcher(), &eligible, 3);
    let out = dir.path().join("run");
    first.save_checkpoint(&out, &[("run.json", b"[]")]).unwrap();
    // A second save replaces the first and leaves no other folder behind; the caller's files are
    // part of the checkpoint that replaced the partial one.
    first.save_checkpoint(&out, &[("run.json", b"{}")]).unwrap();
    drop(first);
    assert!(Trainer::has_checkpoint(&out));
    assert_eq!(std::fs::read(Trainer::checkpoint_dir(&out).join("run.json")).unwrap(), b"{}");
    let mut left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["checkpoint"]);
    // A save killed after setting the old checkpoint aside, before putting the new one in place:
    // the old one is still found and resumed.
    std::fs::rename(Trainer::checkpoint_dir(&out), out.join("checkpoint.old")).unwrap();
    std::fs::create_dir_all(out.join("checkpoint.partial")).unwrap();
    assert_eq!(Trainer::saved_checkpoint(&out), Some(out.join("checkpoint.old")));
    let mut resumed = Trainer::resume(&out, 6, &Device::Cpu).unwrap();
    assert_eq!(resumed.step, 3);
    assert!(resumed.encoders_frozen());
    train_steps(&mut resumed, &mut batcher(), &eligible, 6);
    let (a, b) = (straight.weights(), resumed.weights());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(x == y, "{name} differs after resume");
    }
    let png = dir.path().join("loss.png");
    plot::loss_curves(&resumed.history, Objective::Q, "test", &png).unwrap();
    assert!(image::open(&png).unwrap().width() == 1000);
    let png = dir.path().join("diagnostics.png");
    plot::diagnostics(&resumed.history, &cfg.actions.names, "test", &png).unwrap();
    assert!(image::open(&png).unwrap().width() == 1000);
    assert!(resumed.history.iter().all(|s| s.target_per_dim.len() == cfg.action_dims()));
}

#[test]
fn a_frozen_instruction_path_stops_while_the_frame_encoder_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    write_bag(&dir.path().join("bag"), 4);
    let cfg = micro();
    let data = load(dir.path(), &cfg);
    let tokenizer = micro_tokenizer();
    let mut batcher = Batcher::new(&data, &tokenizer.into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let eligible = data.step_indices(false);
    let opts = TrainOptions {
        steps: 4,
        batch_size: 4,
        warmup: 1,
        freeze_encoders_after: None,
        freeze_instruction_after: Some(2),
        ..Default::default()
    };
    let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    train_steps(&mut trainer, &mut batcher, &eligible, 2);
    assert!(trainer.instruction_frozen() && !trainer.encoders_frozen());
    // Copies: the weights share storage with the variables, which updates overwrite in place.
    let at_freeze: BTreeMap<String, Tensor> = trainer.weights().into_iter().map(|(n, t)| (n, t.copy().unwrap())).collect();
    train_steps(&mut trainer, &mut batcher, &eligible, 4);
    let changed = |name: &str| {
        let (a, b) = (&at_freeze[name], &trainer.weights()[name]);
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap() != b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let instruction: Vec<&String> = at_freeze.keys().filter(|n| is_instruction_weight(n)).collect();
    assert!(instruction.iter().any(|n| n.starts_with("text.")) && instruction.iter().any(|n| n.contains(".film.")));
    for name in &instruction {
        assert!(!changed(name), "{name} trained after the instruction path froze");
    }
    assert!(changed("vision.blocks.0.conv.weight"), "the frame encoder must train on");
}

#[test]
fn the_frozen_encoders_cached_output_equals_encoding_pixels() {
    let dir = tempfile::tempdir().unwrap();
    write_bag(&dir.path().join("bag"), 4);
    let cfg = micro();
    let data = load(dir.path(), &cfg);
    let tokenizer = micro_tokenizer();
    let (model, _) = crate::model::init_model(&cfg, 3, &Device::Cpu).unwrap();
    let mut batcher = Batcher::new(&data, &tokenizer.clone().into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let steps = [0, 6, 13, 19];
    let from_pixels = batcher.batch(&steps, 0.9, 2, false).unwrap();
    batcher.encode_all(&model, |_, _| {}).unwrap();
    let cached = batcher.batch(&steps, 0.9, 2, false).unwrap();
    assert!(matches!(cached.obs, Observations::Encoded(_)));
    let bins = from_pixels.bins.narrow(1, 0, 5).unwrap();
    for (a, b) in [(&from_pixels.obs, &cached.obs), (&from_pixels.next, &cached.next)] {
        let x = model.forward_encoded(&a.encode(&model).unwrap(), &bins).unwrap();
        let y = model.forward_encoded(&b.encode(&model).unwrap(), &bins).unwrap();
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "cached and pixel observations give logits {diff} apart");
    }
}

#[test]
fn recorded_decisions_are_the_actions_learned() {
    // cmd_vel went through the controller's limits; a recorded decision is what the policy was
    // asked for, so training must learn that one where a bag has it.
    let dir = tempfile::tempdir().unwrap();
    write_episodes(&dir.path().join("plain/bag"), 2, None);
    write_episodes(&dir.path().join("decided/bag"), 2, Some(250));
    let cfg = micro();
    let yaw = ActionSpace::new(&cfg.actions).unwrap().index_of("yaw_vel").unwrap();
    let plain = load(&dir.path().join("plain"), &cfg);
    let decided = load(&dir.path().join("decided"), &cfg);
    assert_eq!(decided.steps(), plain.steps());
    assert!(decided.bins.iter().all(|b| b[yaw] == 250), "decisions were not used");
    assert!(plain.bins.iter().all(|b| b[yaw] != 250));
    // Every other dimension matches what the commands encode.
    for (d, p) in decided.bins.iter().zip(&plain.bins) {
        for dim in (0..d.len()).filter(|&i| i != yaw) {
            assert_eq!(d[dim], p[dim]);
        }
    }
}

/// Writes one terminated episode of `frames` camera frames at 30 fps, stamped like a real
/// camera's: frame k is uniformly grey level 8k, and the twist after it turns at yaw_of(k).
fn write_30_fps_episode(dir: &Path, frames: u32) {
    let mut bag = BagWriter::create(dir).unwrap();
    bag.add_topic::<Image>(topics::CAMERA.absolute, TopicQos::SensorData).unwrap();
    bag.add_topic::<StringMsg>(topics::INSTRUCTION.absolute, TopicQos::Latched).unwrap();
    bag.add_topic::<Twist>(topics::CMD_VEL.absolute, TopicQos::Reliable).unwrap();
    bag.add_topic::<EpisodeOutcome>(topics::EPISODE_OUTCOME, TopicQos::Reliable).unwrap();
    let start = 1_700_000_000_000_000_000u64;
    bag.write(topics::INSTRUCTION.absolute, start, &StringMsg { data: "turn to the light".into() }).unwrap();
    let stamp = |k: u32| start + 10_000_000 + u64::from(k) * 1_000_000_000 / 30;
    for k in 0..frames {
        let header = Header { stamp: Time::from_nanos(stamp(k)), frame_id: "camera".into() };
        let data = vec![(8 * k) as u8; (SIZE * SIZE * 3) as usize];
        let image = Image { header, height: SIZE, width: SIZE, encoding: "rgb8".into(), is_bigendian: 0, step: SIZE * 3, data };
        // Received a few ms after it was taken, with jitter: the stamp, not the log time, counts.
        bag.write(topics::CAMERA.absolute, stamp(k) + 3_000_000 + u64::from(k % 3) * 4_000_000, &image).unwrap();
        let twist = Twist { angular: Vector3 { z: yaw_of(k), ..Default::default() }, ..Default::default() };
        bag.write(topics::CMD_VEL.absolute, stamp(k) + 15_000_000, &twist).unwrap();
    }
    let outcome =
        EpisodeOutcome { instruction: "turn to the light".into(), terminated: true, steps: frames, ..Default::default() };
    bag.write(topics::EPISODE_OUTCOME, stamp(frames), &outcome).unwrap();
    bag.finish().unwrap();
}

fn yaw_of(k: u32) -> f64 {
    -1.0 + 0.07 * f64::from(k)
}

#[test]
fn a_30_fps_bag_trains_one_step_per_period() {
    let dir = tempfile::tempdir().unwrap();
    write_30_fps_episode(&dir.path().join("bag"), 29);
    let cfg = micro();
    let space = ActionSpace::new(&cfg.actions).unwrap();
    let (yaw, terminate) = (space.index_of("yaw_vel").unwrap(), space.index_of("terminate").unwrap());
    let at_period = load(dir.path(), &cfg);
    assert_eq!(cfg.frame_period_s, 0.2);
    assert_eq!((at_period.frames_read, at_period.steps()), (29, 5), "frames 0, 6, 12, 18 and 24 of 29");
    for (step, k) in [0u32, 6, 12, 18, 24].into_iter().enumerate() {
        assert!(at_period.frame(step).iter().all(|&v| u32::from(v) == 8 * k), "step {step} holds frame {k}");
        if step < 4 {
            assert!((f64::from(space.decode(yaw, at_period.bins[step][yaw])) - yaw_of(k)).abs() < 0.02, "step {step}");
            assert_eq!(at_period.bins[step][terminate], 0);
        }
    }
    // The terminate that ended the episode after frame 28 ends its last step.
    assert_ne!(at_period.bins[4][terminate], 0);
    // One step per frame at the camera's own period; the cache is rebuilt for it.
    let every_frame = VlaConfig { frame_period_s: 1.0 / 30.0, ..micro() };
    let data = load(dir.path(), &every_frame);
    assert_eq!((data.frames_read, data.steps()), (29, 29));
    assert!(data.frame(7).iter().all(|&v| v == 56));
    assert_eq!(load(dir.path(), &cfg).steps(), 5);
}

/// Collects `episodes` episodes of `families` in `world` and checks that they load one step per
/// frame, each step's action the decision the expert recorded after its frame.
fn collected_bags_load(
    world: crate::sim::WorldKind,
    episodes: usize,
    families: &[crate::sim::TaskFamily],
) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let opts = crate::sim::CollectOptions {
        out: dir.path().join("episodes"),
        episodes,
        seed: 2,
        image_size: 16,
        families: families.to_vec(),
        design: crate::sim::DataDesign::Original,
        detour: crate::sim::DetourSide::Away,
        world,
        threads: 1,
    };
    let report = crate::sim::collect(&opts, &|_| ()).unwrap();
    let cfg = micro();
    assert_eq!(cfg.frame_period_s, crate::sim::CONTROL_PERIOD_NS as f64 / 1e9, "collect records at the presets' period");
    let data = load(&opts.out, &cfg);
    assert_eq!(data.episodes.len(), episodes);
    assert_eq!(data.steps() as u64, report.steps);
    assert_eq!(data.frames_read, data.steps());
    // Each step's action is the decision the expert recorded after its frame, every one in order.
    for (e, episode) in data.episodes.iter().enumerate() {
        let mut decided: Vec<Vec<u32>> = Vec::new();
        BagReader::open(&opts.out.join(format!("episode_{e:06}")))
            .unwrap()
            .for_each(|m| {
                if m.topic == topics::DECISION.absolute {
                    decided.push(crate::bag::decode::<VlaDecision>(m.data).unwrap().bins);
                }
            })
            .unwrap();
        assert_eq!(decided.len(), episode.len, "episode {e}");
        assert_eq!(data.bins[episode.first..episode.first + episode.len], decided[..], "episode {e}");
    }
    (dir, data)
}

#[test]
fn collected_bags_load_unchanged_one_step_per_frame() {
    collected_bags_load(crate::sim::WorldKind::Kinematic, 3, &crate::sim::TaskFamily::ALL);
}

/// Bags of the physics world are bags like any other: they load and train.
#[cfg(feature = "physics")]
#[test]
fn physics_world_bags_load_and_train_like_any_other() {
    use crate::sim::TaskFamily;
    let (_dir, data) = collected_bags_load(crate::sim::WorldKind::Physics, 2, &[TaskFamily::GoTo, TaskFamily::Crawl]);
    let cfg = micro();
    let words: Vec<&str> = data.episodes.iter().map(|e| e.instruction.as_str()).collect();
    let tokenizer = InstructionTokenizer::new(train_word_level(words.into_iter(), 32).unwrap(), 8, 32);
    let mut batcher = Batcher::new(&data, &tokenizer.into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let opts =
        TrainOptions { batch_size: 4, freeze_encoders_after: None, freeze_instruction_after: None, ..TrainOptions::default() };
    let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    let stats = train_steps(&mut trainer, &mut batcher, &data.step_indices(false), 2);
    assert!(stats.iter().all(|s| s.loss.is_finite()), "{:?}", stats.iter().map(|s| s.loss).collect::<Vec<_>>());
}

/// The same bag frames give the network identical input at training and at replay: the bag's
/// camera message -> frame conversion, resizing (here from 40x24 bgr8), normalisation and the
/// history window (padded at the episode's start) are one code path.
#[test]
fn a_bag_frame_reaches_the_network_identically_in_training_and_at_replay() {
    let cfg = micro();
    let dir = tempfile::tempdir().unwrap();
    let bag_dir = dir.path().join("bag");
    let mut bag = BagWriter::create(&bag_dir).unwrap();
    bag.add_topic::<Image>(topics::CAMERA.absolute, TopicQos::SensorData).unwrap();
    bag.add_topic::<StringMsg>(topics::INSTRUCTION.absolute, TopicQos::Latched).unwrap();
    bag.add_topic::<EpisodeOutcome>(topics::EPISODE_OUTCOME, TopicQos::Reliable).unwrap();
    let mut t = 1_000_000_000u64;
    bag.write(topics::INSTRUCTION.absolute, t, &StringMsg { data: "go to the red ball".into() }).unwrap();
    let (width, height) = (40u32, 24u32);
    for step in 0..4u32 {
        t += 200_000_000;
        let data = crate::fixtures::synthetic_frame(width, height, step);
        let header = Header { stamp: Time::from_nanos(t), frame_id: "camera".into() };
        let image = Image { header, height, width, encoding: "bgr8".into(), is_bigendian: 0, step: width * 3, data };
        bag.write(topics::CAMERA.absolute, t, &image).unwrap();
    }
    let outcome = EpisodeOutcome { instruction: "go to the red ball".into(), success: true, steps: 4, ..Default::default() };
    bag.write(topics::EPISODE_OUTCOME, t + 1, &outcome).unwrap();
    bag.finish().unwrap();

    // Training's view: every step's observation window.
    let data = load(&bag_dir, &cfg);
    assert_eq!(data.steps(), 4);
    let words = ["go to the red ball".to_owned()];
    let tokenizer = InstructionTokenizer::new(train_word_level(words.iter(), 32).unwrap(), 8, 32);
    let batcher = Batcher::new(&data, &tokenizer.clone().into(), cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    let trained: Vec<Vec<f32>> = (0..4)
        .map(|step| {
            let batch = batcher.batch(&[step], 0.99, 1, false).unwrap();
            pixels(&batch.obs).frames.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect();

    // Replay's view: the bag's camera messages through the policy's preprocessing and history.
    let policy = crate::fixtures::random_policy(cfg.clone(), &words, 0, &Device::Cpu).unwrap();
    let mut ring = HistoryRing::new(cfg.history);
    let mut served = Vec::new();
    BagReader::open(&bag_dir)
        .unwrap()
        .for_each(|m| {
            if let Some(frame) = crate::bag::camera_frame(m.type_name, m.data) {
                let (frame, _) = frame.unwrap();
                ring.push(policy.preprocess(&frame.as_frame()).unwrap());
                let window = Tensor::cat(&ring.window(), 0).unwrap();
                served.push(window.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            }
        })
        .unwrap();
    assert_eq!(served.len(), 4);
    for (step, (train, serve)) in trained.iter().zip(&served).enumerate() {
        assert_eq!(train.len(), serve.len());
        // Bit for bit, not approximately.
        assert!(train.iter().zip(serve).all(|(a, b)| a.to_bits() == b.to_bits()), "step {step} differs");
    }
    assert_ne!(served[0], served[3], "the frames must differ for the comparison to mean anything");
}

#[test]
fn train_model_writes_the_model_folder_and_a_resumed_run_matches_a_straight_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_bag(&data.join("bag"), 4);
    let config = dir.path().join("micro.json");
    // The architecture's frame period is not the data's: the run's --frame-period replaces it.
    let architecture = VlaConfig { frame_period_s: 0.5, ..micro() };
    std::fs::write(&config, serde_json::to_string(&architecture).unwrap()).unwrap();
    // Warm-up past the last update: the learning rate then does not depend on the planned steps,
    // so a run planned for 2 updates and extended to 4 can match one planned for 4. Batches are cut
    // in 2 shards; the resuming call asks for 1, and must keep the checkpoint's 2 to match.
    let run = |out: &str, steps: usize, resume: bool| {
        let shards = if resume { 1 } else { 2 };
        let run = TrainRun {
            data: data.clone(),
            config: Some(config.to_str().unwrap().to_owned()),
            text: None,
            // A behaviour head too: it must be written, loaded and resumed like every other part.
            behaviour_filter: Some(0.3),
            // Decided with a looser filter than training's, as models/default. `--resume` names
            // neither it nor the recipe: the checkpoint keeps them.
            decision_filter: (!resume).then_some(0.05),
            frame_period: crate::sim::CONTROL_PERIOD_NS as f64 / 1e9,
            out: dir.path().join(out),
            options: TrainOptions {
                steps,
                batch_size: 4,
                warmup: 4,
                freeze_encoders_after: Some(2),
                shards,
                ..Default::default()
            },
            recipe: (!resume).then(|| RecipeRecord { path: "recipes/micro.toml".into(), text: "format = 1\n".into() }),
            checkpoint_every: 250,
            max_minutes: None,
            resume,
            cache: None,
            encoders_from: None,
            device: "cpu".into(),
        };
        let mut events = Vec::new();
        let report = train_model(&run, &mut |event| {
            events.push(match event {
                TrainProgress::Training { first_step, .. } => format!("training from {first_step}"),
                TrainProgress::Encoded { update, .. } => format!("encoded at {update}"),
                TrainProgress::Update { updates, recent } => format!("update {updates} of {}", recent.len()),
                TrainProgress::Data(summary) => format!("data {} {}", summary.episodes, summary.steps_used),
                TrainProgress::Reading { .. } | TrainProgress::Encoding { .. } => return,
            })
        });
        (report, events)
    };
    let (straight, events) = run("straight", 4, false);
    assert_eq!(straight.unwrap().updates, 4);
    assert_eq!(
        events,
        ["data 4 20", "training from 0", "update 1 of 1", "update 2 of 2", "encoded at 2", "update 3 of 3", "update 4 of 4"]
    );
    assert!(matches!(run("straight", 4, false).0, Err(TrainError::Invalid(_))), "a model is never overwritten");
    assert!(run("resumed", 2, false).0.is_ok());
    let (resumed, events) = run("resumed", 4, true);
    assert_eq!(resumed.unwrap().updates, 2);
    assert_eq!(events, ["data 4 20", "training from 2", "encoded at 2", "update 3 of 1", "update 4 of 2"]);
    let weights = |out: &str| std::fs::read(dir.path().join(out).join(WEIGHTS_FILE)).unwrap();
    assert!(weights("straight") == weights("resumed"), "the resumed run's weights differ");
    let written: VlaConfig =
        serde_json::from_slice(&std::fs::read(dir.path().join("resumed").join(crate::policy::CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(written.behaviour_filter, Some(0.05), "the model decides with the decision filter");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("resumed/checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["config"]["behaviour_filter"], 0.3, "the resumed run keeps its checkpoint's architecture");
    assert_eq!(state["format"], recipe::RECORD_FORMAT);
    assert_eq!(written.frame_period_s, 0.2, "the period of the data, the task world's");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("resumed/train.json")).unwrap()).unwrap();
    let mut keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "command",
            "data",
            "decision_filter",
            "diagnostics",
            "final",
            "format",
            "options",
            "params",
            "recipe",
            "revision",
            "samples_per_second",
            "supported_bins_per_dimension",
            "threads",
            "train_seconds_this_run",
            "updates_this_run"
        ]
    );
    assert_eq!(report["format"], recipe::RECORD_FORMAT);
    let revision = report["revision"].as_str().unwrap();
    assert!(revision == "unknown" || revision.trim_end_matches("-dirty").len() == 40, "{revision}");
    assert_eq!(report["recipe"]["path"], "recipes/micro.toml");
    assert_eq!(report["recipe"]["text"], "format = 1\n");
    assert_eq!(report["decision_filter"], 0.05);
    let fingerprint = report["data"]["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint, recipe::data_fingerprint(&data).unwrap());
    assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64, "{fingerprint}");
    // The program by name, not by path (the test binary may run without arguments).
    assert_eq!(report["command"].as_str().unwrap().split(' ').next(), Some("moe_vla"));
    // What train.json records reads back as the run's options.
    let options = recipe::train_json_options(&report).unwrap();
    assert_eq!((options.steps, options.shards, options.freeze_encoders_after), (4, 2, Some(2)));
    for file in ["config.json", "tokenizer.json", "loss.png", "diagnostics.png", "checkpoint/state.json"] {
        assert!(dir.path().join("resumed").join(file).is_file(), "{file}");
    }
}

#[test]
fn a_sentence_encoder_runs_once_per_distinct_instruction_and_stays_frozen() {
    let dir = tempfile::tempdir().unwrap();
    write_bag(&dir.path().join("bag"), 4);
    let data = load(dir.path(), &micro());
    let (encoder, spec) = crate::fixtures::tiny_sentence_encoder(&["turn to the light".into()], 1, &Device::Cpu);
    let encoder = std::sync::Arc::new(encoder);
    let mut cfg = micro();
    cfg.text = crate::model::TextConfig { encoder: Some(spec), ..crate::model::TextConfig::minilm(8) };
    let text = crate::policy::InstructionText::Sentence { encoder: encoder.clone(), max_tokens: 8 };
    let mut batcher = Batcher::new(&data, &text, cfg.history, cfg.preprocess.clone(), &Device::Cpu).unwrap();
    assert_eq!(data.episodes.len(), 4);
    assert_eq!(encoder.runs(), 1, "four episodes, one instruction");
    let opts = TrainOptions { steps: 3, batch_size: 4, freeze_encoders_after: Some(1), ..Default::default() };
    let mut trainer = Trainer::new(&cfg, &opts, &Device::Cpu).unwrap();
    assert!(trainer.weights().keys().all(|n| !n.contains("encoder.layer")), "BERT's weights are no trainable variables");
    let before = trainer.weights()["text.token_proj.weight"].copy().unwrap();
    let eligible = data.step_indices(false);
    let stats = train_steps(&mut trainer, &mut batcher, &eligible, 3);
    assert!(batcher.is_encoded());
    assert!(stats.iter().all(|s| s.loss.is_finite()));
    assert_eq!(encoder.runs(), 1, "batches and the frozen-encoder cache reuse the instruction's embedding");
    let after = &trainer.weights()["text.token_proj.weight"];
    let moved = (after - before).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(moved > 0.0, "the projection trains");
}

#[test]
fn batches_cut_into_even_runs_of_rows() {
    let batch = synthetic_batch(&micro(), 5);
    let sizes = |n| batch.shards(n).unwrap().iter().map(|s| s.batch_size().unwrap()).collect::<Vec<_>>();
    assert_eq!(sizes(1), [5]);
    assert_eq!(sizes(2), [3, 2]);
    assert_eq!(sizes(8), [1; 5]);
    // The second shard starts where the first ends.
    let second = &batch.shards(2).unwrap()[1];
    assert_eq!(second.bins.to_vec2::<u32>().unwrap(), batch.bins.narrow(0, 3, 2).unwrap().to_vec2::<u32>().unwrap());
}

/// Three updates on `batch` in `shards` shards, run on a pool of `threads` threads: each update's
/// measurements and the final weights.
fn sharded_run(
    cfg: &VlaConfig,
    batch: &Batch,
    opts: &TrainOptions,
    shards: usize,
    threads: usize,
) -> (Vec<StepStats>, Vec<Vec<f32>>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let opts = TrainOptions { steps: 3, warmup: 1, shards, ..opts.clone() };
        let mut trainer = Trainer::new(cfg, &opts, &Device::Cpu).unwrap();
        let stats: Vec<StepStats> = (0..3).map(|_| trainer.update(batch).unwrap()).collect();
        let weights = trainer.weights().values().map(|w| w.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
        (stats, weights)
    })
}

#[test]
fn sharded_updates_match_the_whole_batch() {
    // Two shards (5 rows: 3 + 2) make the whole batch's update: the same measurements, gradient
    // norm (before clipping, so a gradient of the wrong scale shows) and, after three updates,
    // weights, up to float rounding. Rows 0 and 4 succeeded, one in each shard: self-imitation is
    // a mean over the batch's successful rows, not over each shard's. The balance loss is per
    // shard by design, so it is left out here.
    let cfg = micro();
    let mut batch = synthetic_batch(&cfg, 5);
    batch.mc_return = Tensor::new(&[0.9f32, 0.0, 0.0, 0.0, 0.5], &Device::Cpu).unwrap();
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * a.abs().max(1.0);
    for opts in [
        TrainOptions { beta: 0.0, imitation_weight: 1.0, ..Default::default() },
        TrainOptions { beta: 0.0, objective: Objective::Bc, ..Default::default() },
    ] {
        let (whole, whole_weights) = sharded_run(&cfg, &batch, &opts, 1, 1);
        let (sharded, sharded_weights) = sharded_run(&cfg, &batch, &opts, 2, 2);
        for (a, b) in whole.iter().zip(&sharded) {
            assert!(close(a.loss, b.loss) && close(a.main, b.main) && close(a.conservative, b.conservative), "{a:?}\n{b:?}");
            assert!(close(a.imitation, b.imitation) && close(a.q_data, b.q_data), "{a:?}\n{b:?}");
            assert!(close(a.q_target, b.q_target) && close(a.greedy_outside, b.greedy_outside), "{a:?}\n{b:?}");
            assert!(a.target_per_dim.iter().zip(&b.target_per_dim).all(|(x, y)| close(*x, *y)), "{a:?}\n{b:?}");
            let (x, y) = (a.grad_norm, b.grad_norm);
            assert!((x - y).abs() <= 1e-4 * x.max(1.0), "{:?}: grad norm {x} against {y}", opts.objective);
        }
        for (w, v) in whole_weights.iter().zip(&sharded_weights) {
            let diff = w.iter().zip(v).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            // AdamW's first steps are close to lr x sign(gradient), so gradient components near 0
            // can round to steps of different size: the weights are the weak check here, the
            // gradient norm above the strong one.
            assert!(diff < 2e-4, "{:?}: weights differ by {diff}", opts.objective);
        }
    }
}

#[test]
fn a_sharded_update_does_not_depend_on_the_thread_count() {
    // Resume is bit-exact only if the same shards give the same bits on any number of threads.
    let cfg = micro();
    let batch = synthetic_batch(&cfg, 6);
    let opts = TrainOptions::default();
    let (one_stats, one) = sharded_run(&cfg, &batch, &opts, 3, 1);
    let (three_stats, three) = sharded_run(&cfg, &batch, &opts, 3, 3);
    assert_eq!(one, three);
    assert_eq!(one_stats, three_stats);
}

#[test]
fn encoded_and_embedded_batches_cut_by_rows() {
    let dev = Device::Cpu;
    let t = |shape: &[usize]| Tensor::arange(0f32, shape.iter().product::<usize>() as f32, &dev).unwrap().reshape(shape).unwrap();
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let encoded = EncodedObservation { text_tokens: t(&[4, 2, 3]), text_valid: Some(t(&[4, 2])), frames: t(&[4, 1, 2, 3]) };
    let Observations::Encoded(part) = Observations::Encoded(encoded.clone()).rows(1, 2).unwrap() else {
        panic!("rows of encoded observations are encoded observations")
    };
    assert_eq!(values(&part.text_tokens), values(&encoded.text_tokens.narrow(0, 1, 2).unwrap()));
    assert_eq!(values(part.text_valid.as_ref().unwrap()), values(&t(&[4, 2]).narrow(0, 1, 2).unwrap()));
    assert_eq!(values(&part.frames), values(&encoded.frames.narrow(0, 1, 2).unwrap()));
    let TextInput::Embedded { tokens, pooled } =
        (TextInput::Embedded { tokens: t(&[4, 2, 3]), pooled: t(&[4, 3]) }).rows(3, 1).unwrap()
    else {
        panic!("rows of embedded text are embedded text")
    };
    assert_eq!(values(&tokens), (18..24).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(values(&pooled), [9.0, 10.0, 11.0]);
}

#[test]
fn train_model_refuses_an_unknown_device_before_reading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let run = TrainRun {
        data: dir.path().join("no-data"),
        config: Some("tiny".into()),
        text: None,
        behaviour_filter: None,
        decision_filter: None,
        frame_period: crate::sim::CONTROL_PERIOD_NS as f64 / 1e9,
        out: dir.path().join("model"),
        options: TrainOptions::default(),
        recipe: None,
        checkpoint_every: 250,
        max_minutes: None,
        resume: false,
        cache: None,
        encoders_from: None,
        device: "tpu:0".into(),
    };
    let err = train_model(&run, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("--device 'tpu:0'") && err.contains("neither"), "{err}");
    assert!(!dir.path().join("model").exists(), "nothing is written");
}
