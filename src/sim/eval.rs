//! Closed-loop evaluation: episodes spread evenly over the task families, alternating seen and
//! held-out instructions within each family, played through the node's `Controller`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::action::ActionSpace;
use crate::model::config::quadruped_action_space;

use super::collect::{episode_seed, play_recorded, EpisodeSummary, FamilyCounts, Recording};
use super::driver::Driver;
use super::episode::run_episode;
use super::task::{sample_task, Scenario, TaskFamily, Templates};
use super::worlds::WorldKind;
use super::SimError;

/// Keeps evaluation scenarios apart from collection scenarios of the same seed.
const EVAL_SALT: u64 = 0x6576_616c_5f73_696d;
/// The stream that picks `--templates` templates, apart from the scene's.
const TEMPLATE_SALT: u64 = 0x7465_6d70_6c61_7465;

/// The options of `moe_vla eval` that decide its episodes and what it keeps of them.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EvalOptions {
    #[arg(long, default_value_t = 60)]
    pub episodes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Camera frames are IMAGE_SIZE x IMAGE_SIZE rgb8.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// A JSON object family -> list of instruction templates ("{o}" for the target's name) that
    /// replaces the built-in templates (seen and held out) of the families it names. The scenes
    /// stay those of the same --seed without it.
    #[arg(long, value_name = "FILE", value_parser = parse_templates)]
    pub templates: Option<Templates>,
    /// The world that plays the scenes (the same scenes in either).
    #[arg(long, value_enum, default_value_t = WorldKind::Kinematic)]
    pub world: WorldKind,
    /// Comma-separated task families: of the --episodes scenes, only those of these families are
    /// played (the same scenes as a full evaluation's; default: all six).
    #[arg(long, value_delimiter = ',', value_parser = super::collect::parse_family, default_values_t = TaskFamily::ALL, hide_default_value = true)]
    pub families: Vec<TaskFamily>,
    /// Record every episode played as a bag in the episode format, DIR/episode_NNNNNN/ (NNNNNN
    /// the scene's index), with the driver's decisions: for a look at its failures in a bag viewer
    /// or `moe_vla replay` (training data only from a seed whose evaluation you do not report:
    /// they hold its scenes and held-out phrasings). DIR must not hold those episodes yet.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
}

impl EvalOptions {
    /// The indexes of the scenes played: those of `families` among the first `episodes`.
    pub fn played(&self) -> Vec<usize> {
        (0..self.episodes).filter(|&i| self.families.contains(&eval_plan(i).0)).collect()
    }
}

fn parse_templates(path: &str) -> Result<Templates, String> {
    Templates::read(std::path::Path::new(path)).map_err(|e| e.to_string())
}

/// Evaluation episode `index` of `seed`: its scenario and the seed its driver is reset with. The
/// templates only replace the instruction, drawn from a stream of its own, so the scene, the start,
/// the goal and the driver's seed do not depend on them.
pub fn eval_scenario(seed: u64, index: usize, templates: Option<&Templates>) -> Result<(Scenario, u64), SimError> {
    let (family, held_out) = eval_plan(index);
    let episode = episode_seed(seed ^ EVAL_SALT, index as u64);
    let mut rng = StdRng::seed_from_u64(episode);
    let mut scenario = sample_task(family, held_out, &mut rng)?;
    let driver_seed = rng.random();
    if let Some(instruction) =
        templates.and_then(|t| t.instruction(&scenario, &mut StdRng::seed_from_u64(episode ^ TEMPLATE_SALT)))
    {
        scenario.instruction = instruction;
    }
    Ok((scenario, driver_seed))
}

/// Family and instruction split of evaluation episode `index`: families round-robin, and each
/// family's successive episodes alternate seen, held out.
pub fn eval_plan(index: usize) -> (TaskFamily, bool) {
    let n = TaskFamily::ALL.len();
    (TaskFamily::ALL[index % n], (index / n) % 2 == 1)
}

/// Success rates, printed as the `eval --json` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub policy: String,
    /// The world that played the scenes.
    pub world: WorldKind,
    pub seed: u64,
    pub episodes: u64,
    /// 0..1 over every episode.
    pub success_rate: f64,
    pub seen_success_rate: f64,
    pub held_out_success_rate: f64,
    /// Family -> success rate (families with episodes only).
    pub per_family: BTreeMap<String, f64>,
    pub per_family_seen: BTreeMap<String, f64>,
    pub per_family_held_out: BTreeMap<String, f64>,
    /// Reason -> episodes.
    pub outcomes: BTreeMap<String, u64>,
    /// Family -> counts over all its episodes.
    pub counts: BTreeMap<String, FamilyCounts>,
    pub mean_steps: f64,
    /// Every episode in order. The scenes depend only on the seed, so two policies evaluated with
    /// one seed can be compared episode by episode (a paired comparison).
    pub per_episode: Vec<EpisodeResult>,
}

/// One evaluation episode's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeResult {
    pub family: String,
    pub instruction: String,
    pub held_out: bool,
    pub success: bool,
    pub reason: String,
}

impl EvalReport {
    fn from_summaries(policy: &str, world: WorldKind, seed: u64, summaries: &[EpisodeSummary]) -> Self {
        let rate = |filter: &dyn Fn(&EpisodeSummary) -> bool| -> Option<f64> {
            let picked: Vec<&EpisodeSummary> = summaries.iter().filter(|s| filter(s)).collect();
            (!picked.is_empty()).then(|| picked.iter().filter(|s| s.outcome.success).count() as f64 / picked.len() as f64)
        };
        let per = |held: Option<bool>| -> BTreeMap<String, f64> {
            TaskFamily::ALL
                .iter()
                .filter_map(|&f| {
                    rate(&|s| s.family == f && held.is_none_or(|h| s.held_out == h)).map(|r| (f.name().to_owned(), r))
                })
                .collect()
        };
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let mut counts: BTreeMap<String, FamilyCounts> = BTreeMap::new();
        for s in summaries {
            *outcomes.entry(s.outcome.reason.name().to_owned()).or_default() += 1;
            counts.entry(s.family.name().to_owned()).or_default().add(&s.outcome);
        }
        let steps: u64 = summaries.iter().map(|s| u64::from(s.outcome.steps)).sum();
        Self {
            policy: policy.to_owned(),
            world,
            seed,
            episodes: summaries.len() as u64,
            success_rate: rate(&|_| true).unwrap_or(0.0),
            seen_success_rate: rate(&|s| !s.held_out).unwrap_or(0.0),
            held_out_success_rate: rate(&|s| s.held_out).unwrap_or(0.0),
            per_family: per(None),
            per_family_seen: per(Some(false)),
            per_family_held_out: per(Some(true)),
            outcomes,
            counts,
            mean_steps: if summaries.is_empty() { 0.0 } else { steps as f64 / summaries.len() as f64 },
            per_episode: summaries
                .iter()
                .map(|s| EpisodeResult {
                    family: s.family.name().to_owned(),
                    instruction: s.instruction.clone(),
                    held_out: s.held_out,
                    success: s.outcome.success,
                    reason: s.outcome.reason.name().to_owned(),
                })
                .collect(),
        }
    }
}

/// Plays `opts.episodes` evaluation episodes with `driver` (reset before each); `progress` sees
/// every finished episode.
pub fn evaluate(
    driver: &mut dyn Driver,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(&EpisodeSummary),
) -> Result<EvalReport, SimError> {
    let plan = EvalPlan::new(opts)?;
    let mut summaries = Vec::with_capacity(plan.played.len());
    for &index in &plan.played {
        let summary = plan.play(driver, index)?;
        progress(&summary);
        summaries.push(summary);
    }
    Ok(EvalReport::from_summaries(driver.name(), opts.world, opts.seed, &summaries))
}

/// [`evaluate`] with one worker thread per driver in `drivers`, each playing the next episode not
/// yet taken: the same report as one driver playing them in order (every episode's driver is
/// reset with the episode's own seed), in about 1/N of the time where the world's simulation,
/// not inference, fills the cores. `progress` sees every finished episode, from the workers.
pub fn evaluate_side_by_side<D: Driver + Send>(
    drivers: &mut [D],
    opts: &EvalOptions,
    progress: &(dyn Fn(&EpisodeSummary) + Sync),
) -> Result<EvalReport, SimError> {
    let name = drivers.first().ok_or_else(|| SimError::Invalid("evaluation needs at least one driver".into()))?.name().to_owned();
    let plan = EvalPlan::new(opts)?;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let played: Mutex<Vec<Result<EpisodeSummary, SimError>>> = Mutex::new(Vec::with_capacity(plan.played.len()));
    std::thread::scope(|scope| {
        for driver in drivers.iter_mut() {
            let (plan, next, failed, played) = (&plan, &next, &failed, &played);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let Some(&index) = plan.played.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                    let result = plan.play(driver, index);
                    match &result {
                        Ok(summary) => progress(summary),
                        Err(_) => failed.store(true, Ordering::Relaxed),
                    }
                    played.lock().unwrap_or_else(|e| e.into_inner()).push(result);
                }
            });
        }
    });
    let mut summaries = played.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().collect::<Result<Vec<_>, _>>()?;
    summaries.sort_by_key(|s| s.index);
    Ok(EvalReport::from_summaries(&name, opts.world, opts.seed, &summaries))
}

/// The episodes an evaluation plays, and where it records them.
struct EvalPlan<'a> {
    opts: &'a EvalOptions,
    played: Vec<usize>,
    /// With `--record`: the folder, and the action space the recorded decisions name.
    recording: Option<(&'a Path, ActionSpace)>,
}

impl<'a> EvalPlan<'a> {
    fn new(opts: &'a EvalOptions) -> Result<Self, SimError> {
        let played = opts.played();
        if played.is_empty() {
            return Err(SimError::Invalid("evaluation needs at least one episode of its families".into()));
        }
        // Refuse before playing anything rather than stop at the first episode recorded before.
        let recording = match &opts.record {
            Some(dir) => {
                if let Some(path) = played.iter().map(|i| episode_dir(dir, *i)).find(|p| p.exists()) {
                    return Err(SimError::Invalid(format!("--record: {} exists already", path.display())));
                }
                Some((dir.as_path(), ActionSpace::new(&quadruped_action_space())?))
            }
            None => None,
        };
        Ok(Self { opts, played, recording })
    }

    /// Plays evaluation episode `index` with `driver`, reset for it.
    fn play(&self, driver: &mut dyn Driver, index: usize) -> Result<EpisodeSummary, SimError> {
        let opts = self.opts;
        let (family, held_out) = eval_plan(index);
        let seed = episode_seed(opts.seed ^ EVAL_SALT, index as u64);
        let (scenario, driver_seed) = eval_scenario(opts.seed, index, opts.templates.as_ref())?;
        let instruction = scenario.instruction.clone();
        driver.reset(driver_seed);
        let outcome = match &self.recording {
            Some((dir, space)) => {
                let path = episode_dir(dir, index);
                let recording =
                    Recording { dir: &path, index, seed, held_out, world: opts.world, image_size: opts.image_size, space };
                play_recorded(&recording, scenario, driver)?
            }
            None => run_episode(opts.world, scenario, driver, opts.image_size, &mut |_| Ok(()))?,
        };
        Ok(EpisodeSummary { index, family, held_out, seed, instruction, outcome, failure_mode: None, style: None })
    }
}

/// Where `--record DIR` puts evaluation episode `index`.
fn episode_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("episode_{index:06}"))
}
