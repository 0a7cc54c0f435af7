//! A digest of recorded episodes without their frames: how each ended and what was commanded on
//! the way (speeds, turning, when the body went down and whether it came up again). `moe_vla bag
//! episodes` prints it for the bags of `collect` and `eval --record`, or any bag with the episode
//! topics.

use std::path::Path;

use serde::Serialize;

use super::read::{events_in_log_order, planar_twist};
use super::Topics;
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, StringMsg, VlaDecision};
use crate::bag::{decode, BagError};

/// A gait command's body-height offset below this counts as crouched, m: half the usual crouch
/// (-0.2 m), so that noise on a standing command does not.
pub const CROUCHED_BELOW: f32 = -0.1;

/// One episode: its outcome and a digest of the commands sent during it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeDigest {
    pub instruction: String,
    pub family: String,
    pub held_out: bool,
    pub success: bool,
    /// Why it ended, as the outcome says ("reached", "collision", ...).
    pub reason: String,
    /// Control steps, as the outcome counts them.
    pub steps: u32,
    /// Who decided: the decisions' `model_id`, empty where the bag has no decisions.
    pub driver: String,
    /// `cmd_vel` messages in the episode; the speed statistics are `None` without any.
    pub commands: usize,
    /// Forward speed commanded, m/s: the mean and the largest.
    pub mean_forward: Option<f32>,
    pub max_forward: Option<f32>,
    /// Mean absolute yaw rate commanded, rad/s.
    pub mean_abs_yaw: Option<f32>,
    /// Seconds from the episode's start (its instruction, else its first command) to the first
    /// gait command that crouched ([`CROUCHED_BELOW`]); `None`: it never did.
    pub first_crouch_s: Option<f64>,
    /// How often the body was raised again after crouching.
    pub stand_ups: usize,
}

/// A bag's episodes, and what could not be made into one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BagDigest {
    pub episodes: Vec<EpisodeDigest>,
    /// An episode began (an instruction or commands) but the bag ends before its outcome.
    pub unfinished: bool,
    /// Why and where reading stopped early, per damaged file.
    pub damage: Vec<String>,
}

/// Commands collected since an instruction (or the last outcome).
#[derive(Default)]
struct Pending {
    instruction: Option<String>,
    start_ns: Option<u64>,
    driver: String,
    twists: Vec<[f32; 3]>,
    /// Per gait command: its log time and whether it crouched.
    crouched: Vec<(u64, bool)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.instruction.is_none() && self.twists.is_empty() && self.crouched.is_empty()
    }

    fn finish(self, outcome: EpisodeOutcome) -> EpisodeDigest {
        let n = self.twists.len();
        let mean = |f: fn(&[f32; 3]) -> f32| (n > 0).then(|| self.twists.iter().map(f).sum::<f32>() / n as f32);
        let stand_ups = self.crouched.windows(2).filter(|w| w[0].1 && !w[1].1).count();
        let first_crouch_s = match (self.start_ns, self.crouched.iter().find(|(_, c)| *c)) {
            (Some(start), Some(&(t, _))) => Some(t.saturating_sub(start) as f64 * 1e-9),
            _ => None,
        };
        EpisodeDigest {
            instruction: self.instruction.filter(|s| !s.is_empty()).unwrap_or(outcome.instruction),
            family: outcome.family,
            held_out: outcome.held_out,
            success: outcome.success,
            reason: outcome.reason,
            steps: outcome.steps,
            driver: self.driver,
            commands: n,
            mean_forward: mean(|t| t[0]),
            max_forward: self.twists.iter().map(|t| t[0]).reduce(f32::max),
            mean_abs_yaw: mean(|t| t[2].abs()),
            first_crouch_s,
            stand_ups,
        }
    }
}

/// The messages a digest reads, in log-time order.
enum Event {
    Instruction(String),
    Twist([f32; 3]),
    Crouched(bool),
    Driver(String),
    Outcome(EpisodeOutcome),
}

/// The episodes in `bag`: an instruction starts one (commands before it are not part of it), an
/// outcome ends it. An outcome with nothing before it since the last, or for another
/// instruction than the one given (latched outcomes a late recorder received), ends none.
/// Undecodable messages are skipped; a damaged bag gives what could be read, and says where.
pub fn digest_episodes(bag: &Path, topics: &Topics) -> Result<BagDigest, BagError> {
    let (events, report) = events_in_log_order(bag, |m| {
        if m.topic == topics.instruction {
            decode::<StringMsg>(m.data).ok().map(|s| Event::Instruction(s.data))
        } else if m.topic == topics.cmd_vel {
            planar_twist(m.type_name, m.data).map(Event::Twist)
        } else if m.topic == topics.gait {
            decode::<GaitCommand>(m.data).ok().map(|g| Event::Crouched(g.body_height < CROUCHED_BELOW))
        } else if m.topic == topics.decision {
            decode::<VlaDecision>(m.data).ok().map(|d| Event::Driver(d.model_id))
        } else if m.topic == topics.outcome {
            decode::<EpisodeOutcome>(m.data).ok().map(Event::Outcome)
        } else {
            None
        }
    })?;

    let mut episodes = Vec::new();
    let mut pending = Pending::default();
    for (t, event) in events {
        match event {
            Event::Instruction(text) => pending = Pending { instruction: Some(text), start_ns: Some(t), ..Pending::default() },
            Event::Twist(twist) => {
                pending.start_ns.get_or_insert(t);
                pending.twists.push(twist);
            }
            Event::Crouched(c) => {
                pending.start_ns.get_or_insert(t);
                pending.crouched.push((t, c));
            }
            Event::Driver(id) => pending.driver = id,
            Event::Outcome(outcome) => {
                let other_instruction = pending
                    .instruction
                    .as_ref()
                    .is_some_and(|given| !given.is_empty() && !outcome.instruction.is_empty() && *given != outcome.instruction);
                if !pending.is_empty() && !other_instruction {
                    episodes.push(std::mem::take(&mut pending).finish(outcome));
                }
            }
        }
    }
    Ok(BagDigest { episodes, unfinished: !pending.is_empty(), damage: report.damage })
}
