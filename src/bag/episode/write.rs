//! Writing one episode bag (see the table in [`super`]); `moe_vla collect` and `moe_vla eval
//! --record` record with it.

use std::path::{Path, PathBuf};

use super::EpisodeTiming;
use crate::action::{GaitFields, PlanarTwist};
use crate::bag::msgs::{EpisodeOutcome, GaitCommand, Header, Image, StringMsg, Time, Twist, VlaDecision};
use crate::bag::{BagError, BagWriter, TopicQos};
use crate::policy::Decision;
use crate::topics;

/// One control step, as the episode records it.
pub struct EpisodeStep<'a> {
    /// 0-based.
    pub index: u32,
    /// The camera frame: rgb8, image size x image size.
    pub pixels: &'a [u8],
    /// What the driver asked for, before the controller's limits (the action training learns);
    /// `None` where it failed to decide.
    pub decision: Option<&'a Decision>,
    /// What the controller commanded after the frame.
    pub twist: PlanarTwist,
    pub gait: &'a GaitFields,
}

/// How an episode ended: its `moe_vla_msgs/msg/EpisodeOutcome` less the header and instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeEnd {
    pub family: String,
    pub success: bool,
    pub reason: String,
    pub terminated: bool,
    pub steps: u32,
    pub seed: u64,
    pub held_out: bool,
    /// Seconds from the first frame to the end.
    pub time_s: f32,
}

/// Writes one episode bag: [`create`](Self::create), a [`step`](Self::step) per control step,
/// then [`finish`](Self::finish).
pub struct EpisodeWriter {
    bag: BagWriter,
    timing: EpisodeTiming,
    instruction: String,
    image_size: u32,
    dimension_names: Vec<String>,
    /// Who decided: the decisions' `model_id`.
    driver: String,
    last_ns: u64,
}

impl EpisodeWriter {
    /// Creates the bag directory `dir` (which must not exist), declares the episode's topics and
    /// writes its instruction. Frames are `image_size` square; decisions name `dimension_names`.
    pub fn create(
        dir: &Path,
        timing: EpisodeTiming,
        instruction: &str,
        image_size: u32,
        dimension_names: &[String],
    ) -> Result<Self, BagError> {
        let mut bag = BagWriter::create(dir)?;
        bag.add_topic::<StringMsg>(topics::INSTRUCTION.absolute, TopicQos::Latched)?;
        bag.add_topic::<Image>(topics::CAMERA.absolute, TopicQos::SensorData)?;
        bag.add_topic::<Twist>(topics::CMD_VEL.absolute, TopicQos::Reliable)?;
        bag.add_topic::<GaitCommand>(topics::GAIT_COMMAND.absolute, TopicQos::Reliable)?;
        bag.add_topic::<EpisodeOutcome>(topics::EPISODE_OUTCOME, TopicQos::Latched)?;
        bag.add_topic::<VlaDecision>(topics::DECISION.absolute, TopicQos::Reliable)?;
        bag.write(topics::INSTRUCTION.absolute, timing.epoch_ns, &StringMsg { data: instruction.to_owned() })?;
        Ok(Self {
            bag,
            timing,
            instruction: instruction.to_owned(),
            image_size,
            dimension_names: dimension_names.to_vec(),
            driver: "expert".into(),
            last_ns: timing.epoch_ns,
        })
    }

    /// Names who decides in the decisions' `model_id` ("expert" unless told).
    pub fn driven_by(mut self, driver: &str) -> Self {
        self.driver = driver.to_owned();
        self
    }

    /// Writes a step: its frame, then the decision (if any), `cmd_vel` and the gait command.
    pub fn step(&mut self, step: &EpisodeStep<'_>) -> Result<(), BagError> {
        let frame_ns = self.timing.frame_ns(step.index);
        let size = self.image_size;
        let image = Image {
            header: Header { stamp: Time::from_nanos(frame_ns), frame_id: "camera".into() },
            height: size,
            width: size,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: size * 3,
            data: step.pixels.to_vec(),
        };
        self.bag.write(topics::CAMERA.absolute, frame_ns, &image)?;
        let action_ns = self.timing.action_ns(step.index);
        if let Some(decided) = step.decision {
            let msg = VlaDecision {
                header: Header { stamp: Time::from_nanos(action_ns), frame_id: "camera".into() },
                instruction: self.instruction.clone(),
                bins: decided.bins.clone(),
                q_values: decided.q.clone(),
                values: decided.command.values.clone(),
                dimension_names: self.dimension_names.clone(),
                terminate: decided.command.terminate,
                model_id: self.driver.clone(),
                ..Default::default()
            };
            self.bag.write(topics::DECISION.absolute, action_ns, &msg)?;
        }
        self.bag.write(topics::CMD_VEL.absolute, action_ns, &Twist::from(step.twist))?;
        let gait =
            GaitCommand::from_fields(step.gait, Header { stamp: Time::from_nanos(action_ns), frame_id: "base_link".into() });
        self.bag.write(topics::GAIT_COMMAND.absolute, action_ns, &gait)?;
        self.last_ns = action_ns;
        Ok(())
    }

    /// Writes the outcome and closes the bag; returns its directory.
    pub fn finish(mut self, end: EpisodeEnd) -> Result<PathBuf, BagError> {
        let end_ns = self.timing.end_ns(end.time_s, self.last_ns);
        let msg = EpisodeOutcome {
            header: Header { stamp: Time::from_nanos(end_ns), frame_id: String::new() },
            family: end.family,
            instruction: self.instruction,
            success: end.success,
            reason: end.reason,
            terminated: end.terminated,
            steps: end.steps,
            seed: end.seed,
            held_out: end.held_out,
        };
        self.bag.write(topics::EPISODE_OUTCOME, end_ns, &msg)?;
        self.bag.finish()
    }
}
