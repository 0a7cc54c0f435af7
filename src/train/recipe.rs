//! Recipes and recorded runs. A recipe (`recipes/default.toml`) is a training run in one file: the
//! architecture, the options and the threshold the trained model decides with; `moe_vla train
//! --recipe` runs it. Options resolve as `TrainOptions::default()`, then the recipe's, then the
//! command line's. What a run records (train.json, a checkpoint's state.json) carries a format
//! version, and `recorded_options` reads every format there has been.

use std::path::{Path, PathBuf};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::{Objective, Sampling, Timeouts, TrainError, TrainOptions};
use crate::model::TextKind;

/// The recipe format this build reads (`format = 1` in the file).
pub const RECIPE_FORMAT: u32 = 1;

/// The format of what a run records: train.json and a checkpoint's state.json (`"format"`). Files
/// without the key are format 0: written before the key existed, they omit the options added
/// after their run (see `recorded_options`).
pub const RECORD_FORMAT: u32 = 3;

/// The source revision of this build: `git rev-parse HEAD`, with `-dirty` where the sources
/// differed from it, or "unknown" (built outside a git checkout).
pub const SOURCE_REVISION: &str = env!("MOE_VLA_REVISION");

/// A recipe file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub format: u32,
    pub architecture: ArchitectureSpec,
    /// Options the recipe sets; the rest are `TrainOptions::default()`'s.
    #[serde(default)]
    pub options: OptionsPatch,
    #[serde(default)]
    pub decision: DecisionSpec,
}

/// `[architecture]`: a config.json or a preset, and what the run replaces in it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureSpec {
    /// A config.json, relative to the recipe's folder.
    pub config: Option<PathBuf>,
    /// Or a preset's name (`VlaConfig::PRESETS`).
    pub preset: Option<String>,
    /// The instruction encoder, replacing the architecture's.
    pub text: Option<TextKind>,
    /// Discrete BCQ's threshold in training (the Bellman targets' filter); adds a behaviour head.
    pub behaviour_filter: Option<f64>,
}

/// `[decision]`: what the trained model's config.json says about deciding.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSpec {
    /// The behaviour filter inference uses, written into config.json in place of training's.
    pub behaviour_filter: Option<f64>,
}

/// Options a recipe or a command line sets; `None` leaves the option to the layer below. The
/// number of batch shards is not here: it follows the machine (`--threads`), not the recipe.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsPatch {
    pub objective: Option<Objective>,
    pub successes_only: Option<bool>,
    pub steps: Option<usize>,
    pub batch_size: Option<usize>,
    pub warmup: Option<usize>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
    pub gamma: Option<f64>,
    pub tau: Option<f64>,
    pub alpha: Option<f64>,
    pub expectile: Option<f64>,
    pub inverse_temperature: Option<f64>,
    pub imitation_weight: Option<f64>,
    pub behaviour_successes_only: Option<bool>,
    pub beta: Option<f64>,
    pub seed: Option<u64>,
    pub n_step: Option<usize>,
    pub timeouts: Option<Timeouts>,
    pub sampling: Option<Sampling>,
    /// A number of updates, or "never".
    #[serde(default, deserialize_with = "freeze")]
    pub freeze_encoders_after: Option<Option<usize>>,
    #[serde(default, deserialize_with = "freeze")]
    pub freeze_instruction_after: Option<Option<usize>>,
    pub min_bin_share: Option<f64>,
}

/// `freeze_*_after`: a number of updates, or "never".
fn freeze<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Freeze {
        After(usize),
        Word(String),
    }
    match Freeze::deserialize(d)? {
        Freeze::After(n) => Ok(Some(Some(n))),
        Freeze::Word(w) if w == "never" => Ok(Some(None)),
        Freeze::Word(w) => Err(D::Error::custom(format!("expected a number of updates or \"never\", got {w:?}"))),
    }
}

impl OptionsPatch {
    /// Sets the options this patch holds.
    pub fn apply(&self, opts: &mut TrainOptions) {
        let Self {
            objective,
            successes_only,
            steps,
            batch_size,
            warmup,
            lr,
            weight_decay,
            gamma,
            tau,
            alpha,
            expectile,
            inverse_temperature,
            imitation_weight,
            behaviour_successes_only,
            beta,
            seed,
            n_step,
            timeouts,
            sampling,
            freeze_encoders_after,
            freeze_instruction_after,
            min_bin_share,
        } = self.clone();
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut opts.objective, objective);
        set(&mut opts.successes_only, successes_only);
        set(&mut opts.steps, steps);
        set(&mut opts.batch_size, batch_size);
        set(&mut opts.warmup, warmup);
        set(&mut opts.adamw.lr, lr);
        set(&mut opts.adamw.weight_decay, weight_decay);
        set(&mut opts.gamma, gamma);
        set(&mut opts.tau, tau);
        set(&mut opts.alpha, alpha);
        set(&mut opts.expectile, expectile);
        set(&mut opts.inverse_temperature, inverse_temperature);
        set(&mut opts.imitation_weight, imitation_weight);
        set(&mut opts.behaviour_successes_only, behaviour_successes_only);
        set(&mut opts.beta, beta);
        set(&mut opts.seed, seed);
        set(&mut opts.n_step, n_step);
        set(&mut opts.timeouts, timeouts);
        set(&mut opts.sampling, sampling);
        set(&mut opts.freeze_encoders_after, freeze_encoders_after);
        set(&mut opts.freeze_instruction_after, freeze_instruction_after);
        set(&mut opts.min_bin_share, min_bin_share);
    }

    /// A patch that sets every option a recipe can set to `opts`' value. Destructures the options
    /// whole, so an option added to `TrainOptions` must be added here (and to the patch) too.
    pub fn from_options(opts: &TrainOptions) -> Self {
        let TrainOptions {
            objective,
            successes_only,
            steps,
            batch_size,
            warmup,
            adamw,
            gamma,
            tau,
            alpha,
            expectile,
            inverse_temperature,
            imitation_weight,
            behaviour_successes_only,
            beta,
            seed,
            n_step,
            timeouts,
            sampling,
            freeze_encoders_after,
            freeze_instruction_after,
            min_bin_share,
            shards: _,
        } = opts.clone();
        Self {
            objective: Some(objective),
            successes_only: Some(successes_only),
            steps: Some(steps),
            batch_size: Some(batch_size),
            warmup: Some(warmup),
            lr: Some(adamw.lr),
            weight_decay: Some(adamw.weight_decay),
            gamma: Some(gamma),
            tau: Some(tau),
            alpha: Some(alpha),
            expectile: Some(expectile),
            inverse_temperature: Some(inverse_temperature),
            imitation_weight: Some(imitation_weight),
            behaviour_successes_only: Some(behaviour_successes_only),
            beta: Some(beta),
            seed: Some(seed),
            n_step: Some(n_step),
            timeouts: Some(timeouts),
            sampling: Some(sampling),
            freeze_encoders_after: Some(freeze_encoders_after),
            freeze_instruction_after: Some(freeze_instruction_after),
            min_bin_share: Some(min_bin_share),
        }
    }
}

impl Recipe {
    /// Parses a recipe's text: its `format` first (absent or other than `RECIPE_FORMAT` is an
    /// error), then every key, unknown ones refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        match table.get("format") {
            None => return Err(format!("no `format = {RECIPE_FORMAT}`: a recipe says which format it is")),
            Some(toml::Value::Integer(f)) if *f == i64::from(RECIPE_FORMAT) => {}
            Some(toml::Value::Integer(f)) => return Err(format!("format {f}: this moe_vla reads recipe format {RECIPE_FORMAT}")),
            Some(other) => return Err(format!("format {other:?}: this moe_vla reads recipe format {RECIPE_FORMAT}")),
        }
        let recipe: Self = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| e.to_string())?;
        let arch = &recipe.architecture;
        if arch.config.is_some() == arch.preset.is_some() {
            return Err("[architecture] needs exactly one of `config` (a config.json) and `preset`".to_string());
        }
        Ok(recipe)
    }

    /// Reads the recipe at `path`.
    pub fn read(path: &Path) -> Result<(Self, String), TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Invalid(format!("recipe {}: {e}", path.display())))?;
        let recipe = Self::parse(&text).map_err(|e| TrainError::Invalid(format!("recipe {}: {e}", path.display())))?;
        Ok((recipe, text))
    }

    /// The architecture as `TrainRun::config` takes it: the config.json's path (relative to the
    /// folder of the recipe at `recipe_path`) or the preset's name.
    pub fn architecture(&self, recipe_path: &Path) -> String {
        match (&self.architecture.config, &self.architecture.preset) {
            (Some(config), _) => {
                let dir = recipe_path.parent().unwrap_or(Path::new(""));
                dir.join(config).to_string_lossy().into_owned()
            }
            (None, Some(preset)) => preset.clone(),
            (None, None) => unreachable!("parse checks the architecture"),
        }
    }

    /// `TrainOptions::default()` with the recipe's options.
    pub fn options(&self) -> TrainOptions {
        let mut opts = TrainOptions::default();
        self.options.apply(&mut opts);
        opts
    }
}

/// The recipe a run ran, as train.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeRecord {
    /// As given on the command line.
    pub path: PathBuf,
    /// The file's whole text.
    pub text: String,
}

/// The options a run recorded (`value`: train.json's or a checkpoint's `options`) in the layout
/// of `format`. Older formats omitted the options added after their runs; each reads as the value
/// the training code then had in effect. Format 0: no self-imitation, the behaviour head on every
/// step, 1-step returns, no freezing, every bin the data took (share 0), one shard. Formats 0 and
/// 1: timeouts terminal, every step alike in sampling.
pub fn recorded_options(value: &serde_json::Value, format: u32) -> Result<TrainOptions, String> {
    if format > RECORD_FORMAT {
        return Err(format!("format {format}: this moe_vla reads formats 0 to {RECORD_FORMAT}"));
    }
    let mut value = value.clone();
    let fields = value.as_object_mut().ok_or("the options are not an object")?;
    let mut absent = Vec::new();
    if format == 0 {
        absent.extend([
            ("imitation_weight", serde_json::json!(0.0)),
            ("behaviour_successes_only", serde_json::json!(false)),
            ("n_step", serde_json::json!(1)),
            ("freeze_encoders_after", serde_json::Value::Null),
            ("freeze_instruction_after", serde_json::Value::Null),
            ("min_bin_share", serde_json::json!(0.0)),
            ("shards", serde_json::json!(1)),
        ]);
    }
    if format <= 1 {
        absent.extend([("timeouts", serde_json::json!("terminal")), ("sampling", serde_json::json!("steps"))]);
    }
    if format <= 2 {
        // Only `iql` reads them, which came with format 3: any value is the run's.
        let defaults = TrainOptions::default();
        absent.extend([
            ("expectile", serde_json::json!(defaults.expectile)),
            ("inverse_temperature", serde_json::json!(defaults.inverse_temperature)),
        ]);
    }
    for (key, old) in absent {
        fields.entry(key).or_insert(old);
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The `format` of a recorded file (0 where it has none).
pub fn record_format(record: &serde_json::Value) -> Result<u32, String> {
    match record.get("format") {
        None => Ok(0),
        Some(f) => f.as_u64().and_then(|f| u32::try_from(f).ok()).ok_or_else(|| format!("format {f} is not a version")),
    }
}

/// The options of a train.json, whatever its format.
pub fn train_json_options(train_json: &serde_json::Value) -> Result<TrainOptions, String> {
    let options = train_json.get("options").ok_or("no options")?;
    recorded_options(options, record_format(train_json)?)
}

/// A fingerprint of the episodes under `dir`: SHA-256 over every bag's files (those `find_bags`
/// finds, in sorted order), one line each of the path relative to `dir` and the size in bytes.
/// Cheap and deterministic (no contents, no times: a copy of the data has the same fingerprint);
/// the frame cache and other files beside the bags do not count.
pub fn data_fingerprint(dir: &Path) -> Result<String, TrainError> {
    let bags = crate::bag::episode::find_bags(dir).map_err(|e| TrainError::Invalid(format!("{}: {e}", dir.display())))?;
    let mut files = Vec::new();
    let mut stack = bags;
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
            for entry in entries {
                stack.push(entry.map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?.path());
            }
        } else {
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            files.push(format!("{relative}\t{}\n", meta.len()));
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    for line in &files {
        hash.update(line.as_bytes());
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    fn json(path: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(repo(path)).unwrap()).unwrap()
    }

    /// A recipe's options, architecture and thresholds against what its shipped model records.
    fn check_reproduces(recipe_path: &str, model: &str, architecture: &str) {
        let (recipe, _) = Recipe::read(&repo(recipe_path)).unwrap();
        let recorded = train_json_options(&json(&format!("{model}/train.json"))).unwrap();
        // The shards follow the machine's threads (2 there), not the recipe.
        assert_eq!(recipe.options(), TrainOptions { shards: 1, ..recorded }, "{recipe_path}");
        assert_eq!(recipe.architecture(Path::new(recipe_path)), architecture);
        assert_eq!(recipe.architecture.text, Some(TextKind::Minilm));
        assert_eq!(recipe.architecture.behaviour_filter, Some(0.3), "training's threshold");
        assert_eq!(recipe.decision.behaviour_filter, Some(0.05));
        let config: crate::model::VlaConfig = serde_json::from_value(json(&format!("{model}/config.json"))).unwrap();
        assert_eq!(config.behaviour_filter, Some(0.05), "{model} decides with the recipe's threshold");
        let config = serde_json::to_value(config).unwrap();
        // The architecture is the model's (what training replaces aside).
        let spec = match &recipe.architecture.config {
            Some(_) => serde_json::from_slice::<crate::model::VlaConfig>(&std::fs::read(repo(architecture)).unwrap()).unwrap(),
            None => crate::model::VlaConfig::preset(architecture).unwrap(),
        };
        let spec = serde_json::to_value(spec).unwrap();
        for key in ["image_size", "history", "tokens_per_frame", "vision", "d_model", "layers", "heads", "ffn", "decoder"] {
            assert_eq!(spec[key], config[key], "{recipe_path}: {key}");
        }
    }

    #[test]
    fn the_default_recipe_is_models_default_recipe() {
        check_reproduces("recipes/default.toml", "models/default", "recipes/../config/tiny-streaming-history6.json");
    }

    #[test]
    fn the_history3_recipe_is_models_history3_recipe() {
        check_reproduces("recipes/history3.toml", "models/history3", "tiny-streaming");
    }

    #[test]
    fn the_physics_recipe_is_models_physics_recipe() {
        check_reproduces("recipes/physics.toml", "models/physics", "recipes/../config/tiny-streaming-history6.json");
        let report = json("models/physics/train.json");
        let (recipe, _) = Recipe::read(&repo("recipes/physics.toml")).unwrap();
        assert_eq!(
            report["recipe"]["text"].as_str().map(|t| Recipe::parse(t).unwrap()),
            Some(recipe),
            "the recorded recipe is the file"
        );
    }

    #[test]
    fn shipped_train_json_files_hold_no_temporary_path_and_read_back() {
        for model in ["models/default", "models/history3", "models/physics"] {
            let text = std::fs::read_to_string(repo(&format!("{model}/train.json"))).unwrap();
            assert!(!text.contains("/tmp"), "{model}/train.json names a temporary path");
            let report: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(record_format(&report).is_ok_and(|f| (1..=RECORD_FORMAT).contains(&f)), "{model}");
            train_json_options(&report).unwrap();
        }
    }

    #[test]
    fn format_0_options_read_as_their_runs_had_them() {
        // Options as train.json recorded them before the later options existed.
        let mut old = serde_json::to_value(TrainOptions::default()).unwrap();
        for later in
            ["imitation_weight", "behaviour_successes_only", "n_step", "freeze_encoders_after", "min_bin_share", "shards"]
        {
            old.as_object_mut().unwrap().remove(later);
        }
        old.as_object_mut().unwrap().remove("freeze_instruction_after");
        old.as_object_mut().unwrap().remove("timeouts");
        old.as_object_mut().unwrap().remove("sampling");
        let opts = train_json_options(&serde_json::json!({ "options": old })).unwrap();
        assert_eq!((opts.timeouts, opts.sampling), (Timeouts::Terminal, Sampling::Steps));
        assert_eq!((opts.n_step, opts.freeze_encoders_after, opts.freeze_instruction_after), (1, None, None));
        assert_eq!((opts.min_bin_share, opts.shards, opts.behaviour_successes_only), (0.0, 1, false));
        // Format 1 holds every option but the timeouts and the sampling: another missing one is an
        // error, not a default.
        let err = train_json_options(&serde_json::json!({ "format": 1, "options": old })).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        let mut format_1 = serde_json::to_value(TrainOptions { n_step: 3, ..TrainOptions::default() }).unwrap();
        format_1.as_object_mut().unwrap().remove("timeouts");
        format_1.as_object_mut().unwrap().remove("sampling");
        let opts = train_json_options(&serde_json::json!({ "format": 1, "options": format_1.clone() })).unwrap();
        assert_eq!((opts.n_step, opts.timeouts, opts.sampling), (3, Timeouts::Terminal, Sampling::Steps));
        assert!(train_json_options(&serde_json::json!({ "format": 2, "options": format_1 })).is_err());
        // Format 2 lacks the iql options, which no run of that format used.
        let mut format_2 = serde_json::to_value(TrainOptions { n_step: 3, ..TrainOptions::default() }).unwrap();
        format_2.as_object_mut().unwrap().remove("expectile");
        format_2.as_object_mut().unwrap().remove("inverse_temperature");
        let opts = train_json_options(&serde_json::json!({ "format": 2, "options": format_2.clone() })).unwrap();
        assert_eq!((opts.n_step, opts.expectile), (3, TrainOptions::default().expectile));
        assert!(train_json_options(&serde_json::json!({ "format": 3, "options": format_2 })).is_err());
        let err = train_json_options(&serde_json::json!({ "format": 9, "options": old })).unwrap_err();
        assert!(err.contains("format 9"), "{err}");
    }

    #[test]
    fn a_format_0_checkpoint_state_reads() {
        let history = serde_json::json!([{ "step": 0, "lr": 0.1, "loss": 1.0, "main": 1.0, "conservative": 0.0,
            "balance": 0.0, "q_data": 0.0, "q_target": 0.0, "grad_norm": 1.0 }]);
        let mut options = serde_json::to_value(TrainOptions::default()).unwrap();
        options.as_object_mut().unwrap().remove("n_step");
        let state = serde_json::json!({ "step": 1, "config": crate::model::VlaConfig::tiny(), "options": options,
            "history": history });
        let read = crate::train::read_checkpoint_state(state.to_string().as_bytes()).unwrap();
        assert_eq!((read.step, read.options.n_step, read.history[0].behaviour), (1, 1, 0.0));
        let err = crate::train::read_checkpoint_state(serde_json::json!({ "format": 1, "step": 1 }).to_string().as_bytes());
        assert!(err.is_err());
    }

    #[test]
    fn recipes_refuse_unknown_keys_and_other_formats() {
        let ok = "format = 1\n[architecture]\npreset = \"tiny\"\n";
        assert!(Recipe::parse(ok).is_ok());
        let err = Recipe::parse(&format!("{ok}[options]\nstepz = 3\n")).unwrap_err();
        assert!(err.contains("unknown field `stepz`"), "{err}");
        let err = Recipe::parse(&format!("{ok}[training]\nsteps = 3\n")).unwrap_err();
        assert!(err.contains("unknown field `training`"), "{err}");
        let err = Recipe::parse(&ok.replace("format = 1", "format = 2")).unwrap_err();
        assert!(err.contains("format 2") && err.contains("recipe format 1"), "{err}");
        let err = Recipe::parse(&ok.replace("format = 1\n", "")).unwrap_err();
        assert!(err.contains("no `format = 1`"), "{err}");
        let err = Recipe::parse(&format!("{ok}config = \"x.json\"\n")).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let err = Recipe::parse(&format!("{ok}[options]\nfreeze_encoders_after = \"sometimes\"\n")).unwrap_err();
        assert!(err.contains("\"never\""), "{err}");
        let never = Recipe::parse(&format!("{ok}[options]\nfreeze_encoders_after = \"never\"\n")).unwrap();
        assert_eq!(never.options().freeze_encoders_after, None);
    }

    #[test]
    fn flags_override_the_recipe_which_overrides_the_defaults() {
        let recipe = Recipe::parse("format = 1\n[architecture]\npreset = \"tiny\"\n[options]\nsteps = 10\nseed = 5\n").unwrap();
        let mut opts = recipe.options();
        OptionsPatch { seed: Some(7), ..Default::default() }.apply(&mut opts);
        let expected = TrainOptions { steps: 10, seed: 7, ..TrainOptions::default() };
        assert_eq!(opts, expected);
    }

    #[test]
    fn a_patch_sets_every_option_but_the_shards() {
        let odd = TrainOptions {
            objective: Objective::Bc,
            successes_only: true,
            steps: 1,
            batch_size: 2,
            warmup: 3,
            adamw: crate::train::optim::AdamWConfig { lr: 0.5, weight_decay: 0.25, ..Default::default() },
            gamma: 0.5,
            tau: 0.5,
            alpha: 2.0,
            expectile: 0.6,
            inverse_temperature: 5.0,
            imitation_weight: 3.0,
            behaviour_successes_only: true,
            timeouts: Timeouts::Bootstrap,
            sampling: Sampling::Episodes,
            beta: 4.0,
            seed: 9,
            n_step: 2,
            freeze_encoders_after: None,
            freeze_instruction_after: Some(7),
            min_bin_share: 0.5,
            shards: 1,
        };
        let mut opts = TrainOptions::default();
        OptionsPatch::from_options(&odd).apply(&mut opts);
        assert_eq!(opts, odd);
    }

    #[test]
    fn the_data_fingerprint_follows_the_bags_names_and_sizes_only() {
        let dir = tempfile::tempdir().unwrap();
        let bag = dir.path().join("episode_000000");
        std::fs::create_dir_all(&bag).unwrap();
        std::fs::write(bag.join("metadata.yaml"), "x").unwrap();
        std::fs::write(bag.join("episode_000000_0.mcap"), "abc").unwrap();
        let first = data_fingerprint(dir.path()).unwrap();
        // The frame cache and files beside the bags do not count.
        std::fs::create_dir_all(dir.path().join(".cache")).unwrap();
        std::fs::write(dir.path().join(".cache/frames"), "cached").unwrap();
        std::fs::write(dir.path().join("collect.json"), "{}").unwrap();
        assert_eq!(data_fingerprint(dir.path()).unwrap(), first);
        std::fs::write(bag.join("episode_000000_0.mcap"), "abcd").unwrap();
        assert_ne!(data_fingerprint(dir.path()).unwrap(), first);
    }
}
