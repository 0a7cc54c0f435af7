//! Bag replay: the production `Controller` and `Policy` driven by a recorded bag, with the bag's
//! log times as the clock. Control ticks, the watchdog, limits and acceleration limits run on bag
//! time exactly as the node runs them on ROS time. Inference takes no bag time: a frame's decision
//! is applied at the frame's log time, and its wall-clock latency goes to the summary, not the
//! output bag, so the same bag and model give the same output bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bag::msgs::{CompressedImage, GaitCommand, Header, Image, StringMsg, Time, Twist, VlaDecision};
use crate::bag::{decode, BagError, BagReader, BagWriter, RawMessage, ReadReport, TopicQos};
use crate::control::{Applied, ConfigError, ControlConfig, ControlOutput, Controller, LatencyStats, StopReason};
use crate::policy::tokenize::accept_instruction;
use crate::policy::{Decoding, OwnedFrame, Policy};

pub const CMD_VEL: &str = "/cmd_vel";
pub const GAIT_COMMAND: &str = "/gait_command";
pub const DECISION: &str = "/moe_vla_node/decision";
/// The instruction in force, as the controller took it.
pub const INSTRUCTION: &str = "/instruction";
/// One header per frame the controller received: the frame's own stamp at its bag time.
pub const FRAMES: &str = "/moe_vla/replay/frames";

/// The flags of `moe_vla replay` that shape the replay; `control` is the node's (from its
/// parameter file) and `frame_id` the node's base frame.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    #[arg(long, default_value = "/camera/image_raw")]
    pub image_topic: String,
    #[arg(long, default_value = "/instruction")]
    pub instruction_topic: String,
    /// Follow this instruction from the start; the bag's instructions are then ignored.
    #[arg(long)]
    pub instruction: Option<String>,
    #[arg(skip)]
    pub control: ControlConfig,
    #[arg(skip = String::from("base_link"))]
    pub frame_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Bag(#[from] BagError),
    #[error(transparent)]
    Control(#[from] ConfigError),
    #[error("the bag has no messages on {0}")]
    NoFrames(String),
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub read: ReadReport,
    pub frames: u64,
    pub bad_frames: u64,
    pub instructions: u64,
    pub bad_instructions: u64,
    pub decisions: u64,
    pub failed_decisions: u64,
    pub commands: u64,
    /// Messages not used, by "topic (type)".
    pub skipped: BTreeMap<String, u64>,
    /// Times the controller went into a stop, by reason, with the first reason's text.
    pub stops: BTreeMap<&'static str, (u64, String)>,
    /// Wall-clock decision latency (preprocessing and inference).
    pub latency: LatencyStats,
    /// First and last bag time, ns.
    pub span: (u64, u64),
}

struct Replay<'a> {
    policy: &'a mut Policy,
    controller: Controller,
    out: &'a mut BagWriter,
    opts: &'a ReplayOptions,
    fixed_instruction: bool,
    period_ns: u64,
    /// Log time of the first message.
    origin: Option<u64>,
    next_tick: Option<u64>,
    stop: Option<StopReason>,
    summary: ReplaySummary,
    /// The first write error; replay stops writing after it.
    error: Option<BagError>,
}

impl Replay<'_> {
    /// Controller time: seconds since the first message, which keeps f64 exact to the nanosecond
    /// over any bag length (seconds since the epoch would not be).
    fn seconds(&mut self, ns: u64) -> f64 {
        let origin = *self.origin.get_or_insert(ns);
        ns.saturating_sub(origin) as f64 * 1e-9
    }

    fn write<M: crate::bag::msgs::RosMessage>(&mut self, topic: &str, time: u64, msg: &M) {
        if self.error.is_none() {
            if let Err(e) = self.out.write(topic, time, msg) {
                self.error = Some(e);
            }
        }
    }

    /// Runs every control tick due up to and including `now`.
    fn advance(&mut self, now: u64) {
        let mut tick = *self.next_tick.get_or_insert(now);
        while tick <= now {
            let now = self.seconds(tick);
            let out = self.controller.tick(now);
            self.emit(&out, tick);
            tick += self.period_ns;
        }
        self.next_tick = Some(tick);
    }

    fn emit(&mut self, out: &ControlOutput, time: u64) {
        if out.stop.as_ref().map(StopReason::kind) != self.stop.as_ref().map(StopReason::kind) {
            if let Some(reason) = &out.stop {
                let entry = self.summary.stops.entry(reason.kind()).or_insert((0, reason.to_string()));
                entry.0 += 1;
            }
        }
        self.stop = out.stop.clone();
        self.summary.commands += 1;
        self.write(CMD_VEL, time, &Twist::from(out.twist));
        let gait =
            GaitCommand::from_fields(&out.gait, Header { stamp: Time::from_nanos(time), frame_id: self.opts.frame_id.clone() });
        self.write(GAIT_COMMAND, time, &gait);
    }

    fn instruction(&mut self, text: Option<String>, time: u64) {
        self.summary.instructions += 1;
        let text = match text.as_deref().map(accept_instruction) {
            Some(Ok(text)) => Some(text.to_owned()),
            _ => {
                self.summary.bad_instructions += 1;
                None
            }
        };
        self.policy.reset();
        self.controller.set_instruction(text.as_deref().map(Arc::from));
        self.write(INSTRUCTION, time, &StringMsg { data: text.unwrap_or_default() });
    }

    fn frame(&mut self, frame: OwnedFrame, stamp: Time, time: u64) {
        self.summary.frames += 1;
        let now = self.seconds(time);
        self.controller.frame_received(now, Duration::from_nanos(stamp.nanos()));
        self.write(FRAMES, time, &Header { stamp, frame_id: String::new() });
        let Some(instruction) = self.controller.instruction().cloned() else {
            return;
        };
        let start = Instant::now();
        let result = self.policy.decide(&frame.as_frame(), &instruction, Decoding::Cached);
        self.summary.latency.record(start.elapsed().as_secs_f32() * 1e3);
        let applied = self.controller.apply(&instruction, &result, now);
        if applied != Applied::Stale {
            let out = self.controller.tick(now);
            self.emit(&out, time);
        }
        match result {
            Err(_) => self.summary.failed_decisions += 1,
            Ok(out) => {
                self.summary.decisions += 1;
                let decision = VlaDecision {
                    header: Header { stamp, frame_id: self.opts.frame_id.clone() },
                    instruction: instruction.to_string(),
                    bins: out.bins,
                    q_values: out.q,
                    values: out.command.values,
                    dimension_names: self.policy.action_space().names().to_vec(),
                    terminate: out.command.terminate,
                    // Inference takes no bag time; wall-clock latency is in the summary.
                    latency_ms: 0.0,
                    inference_ms: 0.0,
                    expert_load: out.expert_load,
                    model_id: self.policy.model_id().to_owned(),
                };
                self.write(DECISION, time, &decision);
            }
        }
    }

    fn message(&mut self, m: &RawMessage<'_>) {
        self.advance(m.log_time);
        self.summary.span.0 = self.summary.span.0.min(m.log_time);
        self.summary.span.1 = self.summary.span.1.max(m.log_time);
        let skip = |summary: &mut ReplaySummary| {
            *summary.skipped.entry(format!("{} ({})", m.topic, m.type_name)).or_default() += 1;
        };
        if m.encoding != "cdr" {
            return skip(&mut self.summary);
        }
        if m.topic == self.opts.image_topic {
            let frame = match m.type_name {
                "sensor_msgs/msg/Image" => decode::<Image>(m.data)
                    .ok()
                    .map(|img| (OwnedFrame::raw(img.width, img.height, img.step, &img.encoding, img.data), img.header.stamp)),
                "sensor_msgs/msg/CompressedImage" => {
                    decode::<CompressedImage>(m.data).ok().map(|img| (Ok(OwnedFrame::Compressed(img.data)), img.header.stamp))
                }
                _ => return skip(&mut self.summary),
            };
            match frame {
                Some((Ok(frame), stamp)) => self.frame(frame, stamp, m.log_time),
                _ => self.summary.bad_frames += 1,
            }
        } else if m.topic == self.opts.instruction_topic && m.type_name == "std_msgs/msg/String" {
            if self.fixed_instruction {
                return skip(&mut self.summary);
            }
            let text = decode::<StringMsg>(m.data).ok().map(|s| s.data);
            self.instruction(text, m.log_time);
        } else {
            skip(&mut self.summary);
        }
    }
}

/// Replays `bag` through `policy` and a `Controller`, writing what the node would have published
/// to `out`. `progress` is called with each message's size in bytes.
pub fn replay(
    bag: &BagReader,
    policy: &mut Policy,
    opts: &ReplayOptions,
    out: &mut BagWriter,
    mut progress: impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    out.add_topic::<Twist>(CMD_VEL, TopicQos::Reliable)?;
    out.add_topic::<GaitCommand>(GAIT_COMMAND, TopicQos::Reliable)?;
    out.add_topic::<VlaDecision>(DECISION, TopicQos::Reliable)?;
    out.add_topic::<StringMsg>(INSTRUCTION, TopicQos::Latched)?;
    out.add_topic::<Header>(FRAMES, TopicQos::SensorData)?;
    policy.reset();
    let mut replay = Replay {
        controller: Controller::new(opts.control)?,
        period_ns: (opts.control.period_s() * 1e9).round().max(1.0) as u64,
        policy,
        out,
        opts,
        fixed_instruction: opts.instruction.is_some(),
        origin: None,
        next_tick: None,
        stop: None,
        summary: ReplaySummary {
            read: ReadReport::default(),
            frames: 0,
            bad_frames: 0,
            instructions: 0,
            bad_instructions: 0,
            decisions: 0,
            failed_decisions: 0,
            commands: 0,
            skipped: BTreeMap::new(),
            stops: BTreeMap::new(),
            latency: LatencyStats::new(100_000),
            span: (u64::MAX, 0),
        },
        error: None,
    };
    let mut started = false;
    let read = bag.for_each(|m| {
        if !started {
            started = true;
            if let Some(text) = &opts.instruction {
                replay.instruction(Some(text.clone()), m.log_time);
            }
        }
        replay.message(m);
        progress(m.data.len() as u64);
    })?;
    if replay.summary.frames + replay.summary.bad_frames == 0 {
        return Err(ReplayError::NoFrames(opts.image_topic.clone()));
    }
    // Run on past the last message until the watchdog has had its say.
    let end = replay.summary.span.1 + ((opts.control.image_timeout_s + 2.0 * opts.control.period_s()) * 1e9) as u64;
    replay.advance(end);
    if let Some(e) = replay.error {
        return Err(e.into());
    }
    replay.summary.read = read;
    Ok(replay.summary)
}
