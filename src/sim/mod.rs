//! The task world: a kinematic quadruped on a plane driven by the 11-value locomotion command, a
//! software-rendered first-person camera, task families after QUARD with exact success and
//! failure, scripted experts of mixed quality, and the closed loop through the node's
//! `Controller` used both to collect episode bags and to evaluate policies.

mod collect;
mod driver;
mod episode;
mod eval;
pub mod expert;
#[cfg(feature = "physics")]
pub mod physics;
mod render;
mod scene;
mod task;
mod world;
mod worlds;

use std::path::PathBuf;

pub use collect::{
    collect, collect_episode, episode_seed, CollectOptions, CollectReport, EpisodeSummary, FamilyCounts, EPISODE_SPACING_NS,
    EPOCH_NS,
};
pub use driver::{Driver, Observation, RandomDriver};
pub use episode::{run_episode, sim_control_config, Step};
pub use eval::{eval_plan, eval_scenario, evaluate, evaluate_side_by_side, EpisodeResult, EvalOptions, EvalReport};
pub use expert::{CleanExpert, DataDesign, DetourSide, Expert, ExpertQuality, FailureMode, Style, StyleKind, MIXED_STYLES};
pub use render::{render, render_into, FOV_DEG};
pub use scene::{
    wrap_angle, Bar, Color, Footprint, Object, Obstacle, Pose, Scene, Shape, NOMINAL_BODY_TOP, REACH_DISTANCE, ROBOT_RADIUS,
    WALL_HEIGHT, WALL_THICKNESS,
};
pub use task::{all_instructions, sample_task, Goal, Scenario, TaskFamily, Templates, ARENA, BAR_BOTTOM, BAR_TOP};
pub use world::{
    gait_speed_factor, speed_limit, Outcome, Reason, World, WorldCommand, BODY_OFFSET_RANGE, BODY_RATE, CONTROL_PERIOD_NS,
    CONTROL_PERIOD_S, CONTROL_RATE_HZ, STAY_RADIUS, SUBSTEP_S,
};
pub use worlds::{new_world, TaskWorld, WorldKind};

use crate::action::ActionError;
use crate::bag::BagError;
use crate::control::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown task family '{0}' (known: go_to, distinguish, go_avoid, go_through, crawl, stop)")]
    UnknownFamily(String),
    #[error("could not sample a valid {0} scenario")]
    Sampling(TaskFamily),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Bag(#[from] BagError),
    #[error(transparent)]
    Control(#[from] ConfigError),
    #[error(transparent)]
    Action(#[from] ActionError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot start {threads} threads: {reason}")]
    Threads { threads: usize, reason: String },
}

#[cfg(test)]
mod tests;
