//! Data collection: scripted experts in sampled scenarios, one rosbag2 bag per episode in the
//! episode format ([`crate::bag::episode`]), stamped with simulated time: episode i starts at
//! [`EPOCH_NS`] + i x [`EPISODE_SPACING_NS`] and its frames are `CONTROL_PERIOD_NS` (200 ms) apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::Serialize;

use crate::action::ActionSpace;
use crate::bag::episode::{EpisodeEnd, EpisodeStep, EpisodeTiming, EpisodeWriter};
use crate::model::config::quadruped_action_space;

use super::driver::Driver;
use super::episode::run_episode;
use super::expert::{DataDesign, DetourSide, Expert, FailureMode, StyleKind};
use super::task::{sample_task, Scenario, TaskFamily};
use super::world::{Outcome, CONTROL_PERIOD_NS};
use super::worlds::WorldKind;
use super::SimError;

/// Sim time of episode 0's start, ns since the epoch.
pub const EPOCH_NS: u64 = 1_700_000_000_000_000_000;
/// Episode i starts at EPOCH_NS + i x this, so bags never overlap.
pub const EPISODE_SPACING_NS: u64 = 100_000_000_000;

/// The flags of `moe_vla collect`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct CollectOptions {
    #[arg(long)]
    pub episodes: usize,
    /// Folder for the episode bags (episode_NNNNNN/) and collect.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Camera frames are IMAGE_SIZE x IMAGE_SIZE rgb8.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Comma-separated task families, taken round-robin (default: all six).
    #[arg(long, value_delimiter = ',', value_parser = parse_family, default_values_t = TaskFamily::ALL, hide_default_value = true)]
    pub families: Vec<TaskFamily>,
    /// Which expert population plays: original (the shipped models' data) or mixed (few clean
    /// routes, risky shortcuts, hesitant successes, late failures).
    #[arg(long, value_enum, default_value_t = DataDesign::Original)]
    pub design: DataDesign,
    /// Which side the experts pass an obstacle on: away from its offset (the shorter way) or
    /// always left where there is room (a rule a camera policy can follow).
    #[arg(long, value_enum, default_value_t = DetourSide::Away)]
    pub detour: DetourSide,
    /// The world that plays the episodes.
    #[arg(long, value_enum, default_value_t = WorldKind::Kinematic)]
    pub world: WorldKind,
    /// Episodes simulated in parallel (default: every core).
    #[arg(long, default_value_t = every_core(), hide_default_value = true)]
    pub threads: usize,
}

/// `--families go_to, crawl` reads as `go_to,crawl`.
pub(super) fn parse_family(name: &str) -> Result<TaskFamily, SimError> {
    name.trim().parse()
}

fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One episode's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeSummary {
    pub index: usize,
    pub family: TaskFamily,
    pub held_out: bool,
    pub seed: u64,
    pub instruction: String,
    pub outcome: Outcome,
    /// The expert's deliberate failure mode, if it had one (collection only).
    pub failure_mode: Option<FailureMode>,
    /// The expert's style (collection only).
    pub style: Option<StyleKind>,
}

impl EpisodeSummary {
    /// What kind of expert played it, for collect.json: its style, or "failure_mode" for the
    /// deliberate failures.
    fn expert_kind(&self) -> Option<String> {
        if self.failure_mode.is_some() {
            return Some("failure_mode".into());
        }
        self.style.and_then(|s| serde_json::to_value(s).ok()).and_then(|v| v.as_str().map(str::to_owned))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FamilyCounts {
    pub episodes: u64,
    pub successes: u64,
    pub steps: u64,
    /// Reason -> episodes.
    pub outcomes: BTreeMap<String, u64>,
}

impl FamilyCounts {
    pub(super) fn add(&mut self, outcome: &Outcome) {
        self.episodes += 1;
        self.successes += u64::from(outcome.success);
        self.steps += u64::from(outcome.steps);
        *self.outcomes.entry(outcome.reason.name().to_owned()).or_default() += 1;
    }

    pub fn success_rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f64 / self.episodes as f64
        }
    }
}

/// What `collect` did; written to `collect.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectReport {
    pub episodes: u64,
    pub seed: u64,
    pub image_size: u32,
    pub design: DataDesign,
    pub detour: DetourSide,
    pub world: WorldKind,
    pub success_rate: f64,
    pub steps: u64,
    pub all: FamilyCounts,
    pub per_family: BTreeMap<String, FamilyCounts>,
    /// Expert style (or "failure_mode") -> counts.
    pub per_expert: BTreeMap<String, FamilyCounts>,
    pub seconds: f64,
    pub episodes_per_s: f64,
}

/// The seed of episode `index` of a run seeded with `seed` (SplitMix64 of both).
pub fn episode_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Collects `opts.episodes` episodes into `opts.out/episode_NNNNNN/` and writes
/// `opts.out/collect.json`. `progress` sees every finished episode (from worker threads).
pub fn collect(opts: &CollectOptions, progress: &(dyn Fn(&EpisodeSummary) + Sync)) -> Result<CollectReport, SimError> {
    if opts.families.is_empty() {
        return Err(SimError::Invalid("no task families to collect".into()));
    }
    if opts.image_size == 0 {
        return Err(SimError::Invalid("the image size must be positive".into()));
    }
    let io = |source| SimError::Io { path: opts.out.clone(), source };
    std::fs::create_dir_all(&opts.out).map_err(io)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| SimError::Threads { threads: opts.threads, reason: e.to_string() })?;
    let space = ActionSpace::new(&quadruped_action_space())?;
    let start = Instant::now();
    let summaries: Vec<EpisodeSummary> = pool.install(|| {
        (0..opts.episodes)
            .into_par_iter()
            .map(|index| {
                let family = opts.families[index % opts.families.len()];
                let dir = opts.out.join(format!("episode_{index:06}"));
                let summary = collect_episode(&dir, index, family, opts, &space)?;
                progress(&summary);
                Ok(summary)
            })
            .collect::<Result<_, SimError>>()
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let mut all = FamilyCounts::default();
    let mut per_family: BTreeMap<String, FamilyCounts> = BTreeMap::new();
    let mut per_expert: BTreeMap<String, FamilyCounts> = BTreeMap::new();
    for s in &summaries {
        all.add(&s.outcome);
        per_family.entry(s.family.name().to_owned()).or_default().add(&s.outcome);
        if let Some(kind) = s.expert_kind() {
            per_expert.entry(kind).or_default().add(&s.outcome);
        }
    }
    let report = CollectReport {
        episodes: all.episodes,
        seed: opts.seed,
        image_size: opts.image_size,
        design: opts.design,
        detour: opts.detour,
        world: opts.world,
        success_rate: all.success_rate(),
        steps: all.steps,
        all,
        per_family,
        per_expert,
        seconds,
        episodes_per_s: if seconds > 0.0 { summaries.len() as f64 / seconds } else { 0.0 },
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| SimError::Invalid(e.to_string()))?;
    let path = opts.out.join("collect.json");
    std::fs::write(&path, json + "\n").map_err(|source| SimError::Io { path, source })?;
    Ok(report)
}

/// Samples episode `index` of the run `opts` describes (its seed, image size, world and design),
/// plays it with a sampled expert and records it as a bag at `dir` (which must not exist).
pub fn collect_episode(
    dir: &Path,
    index: usize,
    family: TaskFamily,
    opts: &CollectOptions,
    space: &ActionSpace,
) -> Result<EpisodeSummary, SimError> {
    let (seed, image_size) = (opts.seed, opts.image_size);
    let episode_seed = episode_seed(seed, index as u64);
    let mut rng = StdRng::seed_from_u64(episode_seed);
    let scenario = sample_task(family, false, &mut rng)?;
    let mut expert = Expert::sampled(&scenario, space.clone(), opts.design, opts.detour, &mut rng);
    let failure_mode = expert.quality().failure;
    let style = Some(expert.quality().style.kind());
    let instruction = scenario.instruction.clone();

    let recording = Recording { dir, index, seed: episode_seed, held_out: false, world: opts.world, image_size, space };
    let outcome = play_recorded(&recording, scenario, &mut expert)?;
    Ok(EpisodeSummary { index, family, held_out: false, seed: episode_seed, instruction, outcome, failure_mode, style })
}

/// Where one recorded episode goes and what its outcome says besides the verdict (`collect`'s
/// episodes and `eval --record`'s).
pub(super) struct Recording<'a> {
    /// The bag's folder, which must not exist.
    pub dir: &'a Path,
    /// Stamps: the episode starts at [`EPOCH_NS`] + index x [`EPISODE_SPACING_NS`].
    pub index: usize,
    pub seed: u64,
    pub held_out: bool,
    pub world: WorldKind,
    pub image_size: u32,
    /// The action space the decisions' bins belong to.
    pub space: &'a ActionSpace,
}

/// Plays `scenario` with `driver` in `rec.world` and records it as a bag at `rec.dir`: every
/// step's frame, decision (tagged with the driver's id) and commands, then the outcome.
pub(super) fn play_recorded(rec: &Recording<'_>, scenario: Scenario, driver: &mut dyn Driver) -> Result<Outcome, SimError> {
    let timing = EpisodeTiming { epoch_ns: EPOCH_NS + rec.index as u64 * EPISODE_SPACING_NS, period_ns: CONTROL_PERIOD_NS };
    let family = scenario.family;
    let mut bag =
        EpisodeWriter::create(rec.dir, timing, &scenario.instruction, rec.image_size, rec.space.names())?.driven_by(driver.id());
    let outcome = run_episode(rec.world, scenario, driver, rec.image_size, &mut |step| {
        bag.step(&EpisodeStep {
            index: step.index,
            pixels: step.pixels,
            decision: step.decision.as_ref().ok(),
            twist: step.output.twist,
            gait: &step.output.gait,
        })
        .map_err(SimError::from)
    })?;
    bag.finish(EpisodeEnd {
        family: family.name().into(),
        success: outcome.success,
        reason: outcome.reason.name().into(),
        terminated: outcome.terminated,
        steps: outcome.steps,
        seed: rec.seed,
        held_out: rec.held_out,
        time_s: outcome.time_s,
    })?;
    Ok(outcome)
}
