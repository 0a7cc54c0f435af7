//! Training data from episode bags: the dataset (episode table, action bins, frames) over the
//! frame cache ([`cache`]), and the batches built from it ([`batch`]). Bags are read in the
//! episode format ([`crate::bag::episode`]): one step per frame period, its action the command
//! that followed its frame, its reward from the episode's outcome; the discount then applies per
//! period, as the model's history spaces its frames.

mod batch;
mod cache;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::history_window;

pub use crate::bag::episode::Topics;
pub use batch::{n_step, Batch, Batcher, Observations};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Bag { path: PathBuf, reason: String },
    #[error("no episodes found under {0} (bags need {1}, an instruction and an episode outcome)")]
    Empty(PathBuf, String),
    #[error("frame cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io { path: path.to_path_buf(), source }
}

/// One episode: a run of consecutive steps in the frame cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub bag: PathBuf,
    pub instruction: String,
    pub family: String,
    pub success: bool,
    /// Ended by the terminate action: the last step's terminate bin is set.
    pub terminated: bool,
    /// Why it ended, as its outcome says ("timeout", "collision", ...).
    pub reason: String,
    /// Index of the first step (frame) in the dataset.
    pub first: usize,
    pub len: usize,
}

impl Episode {
    /// Cut short by the time limit rather than ended by what happened.
    pub fn timed_out(&self) -> bool {
        self.reason == TIMEOUT_REASON
    }
}

/// The outcome reason of an episode that ran out of time (`sim::Reason::Timeout`'s name).
pub const TIMEOUT_REASON: &str = "timeout";

/// A loaded dataset: episode table, action bins and memory-mapped frames.
pub struct Dataset {
    pub episodes: Vec<Episode>,
    /// Per step, one bin per action dimension.
    pub bins: Vec<Vec<u32>>,
    /// Bags that yielded no episode, with the reason.
    pub skipped: Vec<String>,
    /// Camera frames in the episodes; more than the steps where a camera ran faster than the period.
    pub frames_read: usize,
    /// Seconds between consecutive steps of an episode.
    pub frame_period_s: f64,
    episode_of: Vec<u32>,
    frames: memmap2::Mmap,
    image_size: usize,
}

impl Dataset {
    pub fn steps(&self) -> usize {
        self.bins.len()
    }

    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Keeps only successful episodes' steps eligible for sampling (behaviour cloning on
    /// demonstrations). Returns the eligible step indices.
    pub fn step_indices(&self, successes_only: bool) -> Vec<usize> {
        self.episodes.iter().filter(|e| e.success || !successes_only).flat_map(|e| e.first..e.first + e.len).collect()
    }

    /// The RGB bytes ([S, S, 3]) of step `i`'s frame.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.image_size * self.image_size * 3;
        &self.frames[i * n..(i + 1) * n]
    }

    pub fn episode_of(&self, step: usize) -> &Episode {
        &self.episodes[self.episode_of[step] as usize]
    }

    /// Frame indices of the observation at `step`, oldest first; the episode's first frame
    /// repeats where the history reaches before it (as the policy's history ring does).
    pub fn history(&self, step: usize, history: usize) -> Vec<usize> {
        history_window(self.episode_of(step).first, step, history).collect()
    }

    /// Draws `batch` steps uniformly from `eligible`.
    pub fn sample_steps(eligible: &[usize], batch: usize, rng: &mut impl Rng) -> Vec<usize> {
        (0..batch).map(|_| eligible[rng.random_range(0..eligible.len())]).collect()
    }

    /// Draws `batch` steps from `eligible` an episode at a time: an episode uniformly among those
    /// with eligible steps, then one of its eligible steps uniformly, so that long episodes weigh
    /// no more than short ones.
    pub fn sample_by_episode(&self, eligible: &[usize], batch: usize, rng: &mut impl Rng) -> Vec<usize> {
        // Eligible steps come episode by episode: the runs of one episode's steps.
        let mut runs: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        for i in 1..=eligible.len() {
            if i == eligible.len() || self.episode_of[eligible[i]] != self.episode_of[eligible[start]] {
                runs.push(&eligible[start..i]);
                start = i;
            }
        }
        (0..batch)
            .map(|_| {
                let run = runs[rng.random_range(0..runs.len())];
                run[rng.random_range(0..run.len())]
            })
            .collect()
    }
}

/// Steps per family and outcome, for the training summary.
pub fn summary(data: &Dataset) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in &data.episodes {
        let entry = out.entry(e.family.clone()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(e.success);
    }
    out
}
