//! The episode format: one rosbag2 bag per episode, as `moe_vla collect` records it and training
//! reads it, recorded as a robot records one and stamped with (simulated) time.
//!
//! Topics (names from [`crate::topics`]), in the order the writer declares them:
//!
//! | topic | type | QoS | when |
//! |---|---|---|---|
//! | `/instruction` | `std_msgs/msg/String` | latched | once, at the episode's epoch (before the first frame) |
//! | `/camera/image_raw` | `sensor_msgs/msg/Image` (rgb8, frame_id `camera`) | sensor data | step i at epoch + [`FRAME_OFFSET_NS`] + i x the control period |
//! | `/cmd_vel` | `geometry_msgs/msg/Twist` | reliable | every step, [`ACTION_DELAY_NS`] after its frame (zero on a stop) |
//! | `/gait_command` | `moe_vla_msgs/msg/GaitCommand` | reliable | every step, with `/cmd_vel` |
//! | `/moe_vla/episode` | `moe_vla_msgs/msg/EpisodeOutcome` | latched | once, at the end |
//! | `/moe_vla_node/decision` | `moe_vla_msgs/msg/VlaDecision` | reliable | with `/cmd_vel`, where the driver decided |
//!
//! The outcome's `terminated` flag is the terminate bit of the last step and its `success` the
//! reward. The control period is the writer's input (the simulator's is
//! `sim::CONTROL_PERIOD_NS`), so this module depends on neither the simulator nor training.
//!
//! Reading ([`read_episodes`]) cuts a bag, from any recorder, into episodes of one step per frame
//! period; [`find_bags`] discovers the bags under a folder. [`digest_episodes`] summarises each
//! episode's outcome and commands without decoding frames.

mod digest;
mod read;
mod write;

use serde::{Deserialize, Serialize};

use crate::topics;

pub use digest::{digest_episodes, BagDigest, EpisodeDigest, CROUCHED_BELOW};
pub use read::{find_bags, read_episodes, EpisodeSteps};
pub use write::{EpisodeEnd, EpisodeStep, EpisodeWriter};

/// A step's camera frame is stamped this long after the step's start.
pub const FRAME_OFFSET_NS: u64 = 10_000_000;
/// The commands that followed a frame are stamped this long after it.
pub const ACTION_DELAY_NS: u64 = 1_000_000;

/// When an episode's messages are stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeTiming {
    /// The episode's start (its instruction's stamp), ns since the epoch.
    pub epoch_ns: u64,
    /// One control step: frames are this far apart.
    pub period_ns: u64,
}

impl EpisodeTiming {
    /// The stamp of step `index`'s frame.
    pub fn frame_ns(&self, index: u32) -> u64 {
        self.epoch_ns + FRAME_OFFSET_NS + u64::from(index) * self.period_ns
    }

    /// The stamp of the commands that followed step `index`'s frame.
    pub fn action_ns(&self, index: u32) -> u64 {
        self.frame_ns(index) + ACTION_DELAY_NS
    }

    /// The outcome's stamp: `time_s` after the first frame, and after the last command
    /// (`last_ns`).
    pub fn end_ns(&self, time_s: f32, last_ns: u64) -> u64 {
        (self.epoch_ns + FRAME_OFFSET_NS + (time_s as f64 * 1e9).round() as u64).max(last_ns + ACTION_DELAY_NS)
    }
}

/// Topic names of the bags episodes are read from; the default is what [`EpisodeWriter`] writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topics {
    pub image: String,
    pub instruction: String,
    pub cmd_vel: String,
    pub gait: String,
    pub outcome: String,
    /// The policy's own decisions (`moe_vla_msgs/msg/VlaDecision`): where a bag has them, they are the
    /// actions learned, since they are what a policy is asked for; the commands on `cmd_vel` and
    /// `gait` have been through the controller's clamps and acceleration limits.
    pub decision: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            image: topics::CAMERA.absolute.into(),
            instruction: topics::INSTRUCTION.absolute.into(),
            cmd_vel: topics::CMD_VEL.absolute.into(),
            gait: topics::GAIT_COMMAND.absolute.into(),
            outcome: topics::EPISODE_OUTCOME.into(),
            decision: topics::DECISION.absolute.into(),
        }
    }
}

#[cfg(test)]
mod tests;
