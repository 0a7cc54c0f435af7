//! A digest of recorded episodes without their frames: how each ended and what was commanded on
//! the way (speeds, turning, when the body went down and whether it came up again). `moe_vla bag
//! episodes` prints it for the bags of `collect` and `eval --record`, or any bag with the episode
//! topics.

use std::path::Path;

use serde::Serialize;

use super::read::planar_twist;
use super::Topics;
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, StringMsg, VlaDecision};
use crate::bag::{decode, BagError, BagReader};

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
    /// `cmd_vel` messages in the episode.
    pub commands: usize,
    /// Forward speed commanded, m/s: the mean and the largest.
    pub mean_forward: f32,
    pub max_forward: f32,
    /// Mean absolute yaw rate commanded, rad/s.
    pub mean_abs_yaw: f32,
    /// Index of the first gait command that crouched ([`CROUCHED_BELOW`]); `None`: never did.
    pub first_crouch: Option<usize>,
    /// How often the body was raised again after crouching.
    pub stand_ups: usize,
}

/// Commands collected between an instruction and its outcome.
#[derive(Default)]
struct Pending {
    instruction: String,
    driver: String,
    twists: Vec<[f32; 3]>,
    crouched: Vec<bool>,
}

impl Pending {
    fn finish(self, outcome: EpisodeOutcome) -> EpisodeDigest {
        let n = self.twists.len();
        let mean = |f: &dyn Fn(&[f32; 3]) -> f32| if n == 0 { 0.0 } else { self.twists.iter().map(f).sum::<f32>() / n as f32 };
        let stand_ups = self.crouched.windows(2).filter(|w| w[0] && !w[1]).count();
        EpisodeDigest {
            instruction: if self.instruction.is_empty() { outcome.instruction } else { self.instruction },
            family: outcome.family,
            held_out: outcome.held_out,
            success: outcome.success,
            reason: outcome.reason,
            steps: outcome.steps,
            driver: self.driver,
            commands: n,
            mean_forward: mean(&|t| t[0]),
            max_forward: self.twists.iter().map(|t| t[0]).fold(0.0, f32::max),
            mean_abs_yaw: mean(&|t| t[2].abs()),
            first_crouch: self.crouched.iter().position(|&c| c),
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

/// The episodes in `bag`: an instruction starts one, an outcome ends it (commands before the
/// first instruction belong to the first episode). Undecodable messages are skipped; a bag
/// without outcomes has no episodes.
pub fn digest_episodes(bag: &Path, topics: &Topics) -> Result<Vec<EpisodeDigest>, BagError> {
    let reader = BagReader::open(bag)?;
    let mut events: Vec<(u64, usize, Event)> = Vec::new();
    reader.for_each(|m| {
        let event = if m.topic == topics.instruction {
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
        };
        if let Some(event) = event {
            let order = events.len();
            events.push((m.log_time, order, event));
        }
    })?;
    events.sort_by_key(|(t, order, _)| (*t, *order));

    let mut digests = Vec::new();
    let mut pending = Pending::default();
    for (_, _, event) in events {
        match event {
            Event::Instruction(text) => pending = Pending { instruction: text, ..Pending::default() },
            Event::Twist(t) => pending.twists.push(t),
            Event::Crouched(c) => pending.crouched.push(c),
            Event::Driver(id) => pending.driver = id,
            Event::Outcome(outcome) => digests.push(std::mem::take(&mut pending).finish(outcome)),
        }
    }
    Ok(digests)
}
