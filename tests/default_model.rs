//! The shipped models against a random policy, closed loop in the task world through the node's
//! Controller, on a fixed seed (models/physics in the physics world, with the feature `physics`).
//! The evaluation seeds are disjoint from the training data's, and half the instructions are
//! held-out paraphrases.

use std::path::Path;

use candle_core::Device;
use moe_vla::action::ActionSpace;
use moe_vla::model::config::quadruped_action_space;
use moe_vla::policy::Policy;
use moe_vla::sim::{evaluate, evaluate_side_by_side, EvalOptions, RandomDriver, TaskFamily, WorldKind};
use moe_vla::train::TrainOptions;

/// A shipped model against a random policy on the same scenes of `world`: 20 points ahead, and not
/// only by the stop family, which a random policy already solves by terminating at once.
fn beats_a_random_policy_by_a_wide_margin(model: &str, world: WorldKind, episodes: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(model);
    let load = |threads| {
        let mut policy = Policy::load(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{model} loads: {e}"));
        policy.set_threads(threads).unwrap();
        policy
    };
    let mut policy = load(2);
    assert!(policy.config().trained, "{model} must be a trained model");
    let opts = EvalOptions {
        episodes,
        seed: 2026,
        image_size: 64,
        templates: None,
        world,
        families: TaskFamily::ALL.to_vec(),
        record: None,
    };
    // Two copies of the model side by side, one inference thread each, as `eval --jobs 2`; the
    // first 12 scenes played in order by one copy on two threads give the same episodes.
    let scores = evaluate_side_by_side(&mut [load(1), load(1)], &opts, &|_| {}).unwrap();
    let in_order = evaluate(&mut policy, &EvalOptions { episodes: 12, ..opts.clone() }, &mut |_| {}).unwrap();
    assert_eq!(in_order.per_episode, scores.per_episode[..12]);
    // Random over the whole action space, as `moe_vla eval --policy random` (not over the model's
    // supported bins, which already encode much of what the data knows).
    let space = ActionSpace::new(&quadruped_action_space()).unwrap();
    let random = evaluate(&mut RandomDriver::new(space, 2026), &opts, &mut |_| {}).unwrap();
    eprintln!("{model} {:.3} {:?}", scores.success_rate, scores.per_family);
    eprintln!("random policy {:.3} {:?}", random.success_rate, random.per_family);
    assert!(
        scores.success_rate >= random.success_rate + 0.2,
        "{model} {:.3} vs random {:.3}",
        scores.success_rate,
        random.success_rate
    );
    let moving: f64 = scores.per_family.iter().filter(|(f, _)| f.as_str() != "stop").map(|(_, r)| r).sum();
    assert!(moving / 5.0 >= 0.2, "moving families {:?}", scores.per_family);
}

#[test]
fn default_model_beats_a_random_policy_by_a_wide_margin() {
    beats_a_random_policy_by_a_wide_margin("models/default", WorldKind::Kinematic, 48);
}

/// models/physics in the world it was trained in.
#[cfg(feature = "physics")]
#[test]
fn physics_model_beats_a_random_policy_in_the_physics_world() {
    beats_a_random_policy_by_a_wide_margin("models/physics", WorldKind::Physics, 30);
}

#[test]
fn train_flag_defaults_are_the_default_models_recipe() {
    // docs/training.md promises that `moe_vla train`'s defaults are the recipe of models/default (the
    // seed and the thread count aside): a retrained default must move the flags with it.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("train.json")).unwrap()).unwrap();
    // Read as its format says: a train.json older than an option holds the value its run had.
    let shipped = moe_vla::train::recipe::train_json_options(&report).unwrap();
    let defaults = TrainOptions { seed: shipped.seed, shards: shipped.shards, ..TrainOptions::default() };
    assert_eq!(defaults, shipped);
}

#[test]
fn every_shipped_model_loads_and_is_q_learned_on_mixed_data() {
    // The package installs every folder of models/ (tests/ros/test_packaging.py), models/default
    // among them: each must be a trained model a user can point `model_dir` at, with the README
    // that says what it is.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut shipped = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let policy = Policy::load(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(policy.config().trained, "{} is untrained", dir.display());
        assert!(dir.join("README.md").is_file(), "{} has no README.md", dir.display());
        assert!(policy.config().actions.supported.is_some(), "{}: the supported bins travel with the model", dir.display());
        // Recorded, not left to the default for configs that predate it: trained on collect's bags.
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let period = moe_vla::sim::CONTROL_PERIOD_NS as f64 / 1e9;
        assert_eq!(config["frame_period_s"].as_f64(), Some(period), "{}: its frame period", dir.display());
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("train.json")).unwrap()).unwrap();
        assert_eq!(report["options"]["objective"], "q", "{} must be trained by Q-learning", dir.display());
        assert_eq!(report["options"]["successes_only"], false, "{}: on all episodes, failures included", dir.display());
        let data = &report["data"];
        assert!(data["successful_episodes"].as_u64().unwrap() < data["episodes"].as_u64().unwrap(), "{}", dir.display());
        shipped += 1;
    }
    assert!(models.join("default").is_dir() && shipped >= 1, "no models/default in {}", models.display());
}
