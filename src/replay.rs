//! Bag replay: the production `Controller` and `Policy` driven by a recorded bag, with the bag's
//! log times as the clock. Control ticks, the watchdog, limits and acceleration limits run on bag
//! time exactly as the node runs them on ROS time. Inference takes no bag time: a frame's decision
//! is applied at the frame's log time, and its wall-clock latency goes to the summary, not the
//! output bag, so the same bag and model give the same output bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bag::msgs::{GaitCommand, Header, StringMsg, Time, Twist, VlaDecision};
use crate::bag::{camera_frame, decode, BagError, BagReader, BagWriter, RawMessage, ReadReport, TopicQos};
use crate::control::{ConfigError, ControlConfig, ControlOutput, Counters, LatencyStats, Session};
use crate::policy::tokenize::accept_instruction;
use crate::policy::{frame_stamp_s, Decoding, OwnedFrame, Policy};
use crate::topics::{self, REPLAY_FRAMES};

const CMD_VEL: &str = topics::CMD_VEL.absolute;
/// Where the controller's clock starts: far enough from zero that frames stamped before the bag's
/// first message keep their (positive) stamps.
const CLOCK_OFFSET_S: f64 = 3600.0;
const GAIT_COMMAND: &str = topics::GAIT_COMMAND.absolute;
const DECISION: &str = topics::DECISION.absolute;
/// The instruction in force, as the controller took it.
const INSTRUCTION: &str = topics::INSTRUCTION.absolute;

/// The flags of `moe_vla replay` that shape the replay; `control` is the node's (from its
/// parameter file) and `frame_id` the node's base frame.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    #[arg(long, default_value = topics::CAMERA.absolute)]
    pub image_topic: String,
    #[arg(long, default_value = topics::INSTRUCTION.absolute)]
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
    /// The control session's counters (frames, instructions, decisions, commands, stops).
    pub counters: Counters,
    /// Messages not used, by "topic (type)".
    pub skipped: BTreeMap<String, u64>,
    /// Wall-clock decision latency (preprocessing and inference).
    pub latency: LatencyStats,
    /// First and last bag time, ns.
    pub span: (u64, u64),
}

struct Replay<'a> {
    policy: &'a mut Policy,
    session: Session,
    out: &'a mut BagWriter,
    opts: &'a ReplayOptions,
    fixed_instruction: bool,
    period_ns: u64,
    /// Log time of the first message.
    origin: Option<u64>,
    next_tick: Option<u64>,
    skipped: BTreeMap<String, u64>,
    /// First and last bag time, ns.
    span: (u64, u64),
    frames_seen: u64,
    /// The first write error; replay stops writing after it.
    error: Option<BagError>,
}

impl Replay<'_> {
    /// Controller time: seconds since the first message plus `CLOCK_OFFSET_S`, which keeps f64
    /// exact to the nanosecond over any bag length (seconds since the epoch would not be).
    fn seconds(&mut self, ns: u64) -> f64 {
        let origin = *self.origin.get_or_insert(ns);
        ns.saturating_sub(origin) as f64 * 1e-9 + CLOCK_OFFSET_S
    }

    /// A header stamp on the controller's clock, so that its lag behind the message's bag time is
    /// what the node sees under `ros2 bag play --clock`. Zero stays zero (unstamped).
    fn stamp_on_clock(&self, stamp: Time) -> Duration {
        let origin = self.origin.unwrap_or(0) as i128;
        let ns = stamp.nanos() as i128 - origin + (CLOCK_OFFSET_S * 1e9) as i128;
        if stamp.nanos() == 0 || ns <= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(ns as u64)
        }
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
            let out = self.session.tick(now);
            if out.publish {
                self.emit(&out.output, tick);
            }
            tick += self.period_ns;
        }
        self.next_tick = Some(tick);
    }

    fn emit(&mut self, out: &ControlOutput, time: u64) {
        self.write(CMD_VEL, time, &Twist::from(out.twist));
        let header = Header { stamp: Time::from_nanos(time), frame_id: self.opts.frame_id.clone() };
        let gait = if out.stop.is_some() {
            GaitCommand::standing(&out.gait, header)
        } else {
            GaitCommand::from_fields(&out.gait, header)
        };
        self.write(GAIT_COMMAND, time, &gait);
    }

    fn instruction(&mut self, text: Option<String>, time: u64) {
        let text = match text.as_deref().map(accept_instruction) {
            Some(Ok(text)) => {
                self.session.instruct(Arc::from(text));
                text.to_owned()
            }
            _ => {
                self.session.reject_instruction();
                String::new()
            }
        };
        self.policy.reset();
        self.write(INSTRUCTION, time, &StringMsg { data: text });
    }

    fn frame(&mut self, frame: OwnedFrame, stamp: Time, time: u64) {
        let now = self.seconds(time);
        let source_stamp = self.stamp_on_clock(stamp);
        let check = self.session.frame_received(now, source_stamp);
        self.write(REPLAY_FRAMES, time, &Header { stamp, frame_id: String::new() });
        let Some(instruction) = self.session.instruction().cloned().filter(|_| check.is_fresh()) else {
            return;
        };
        let start = Instant::now();
        // As the node's worker stamps it: the camera's stamp, else the frame's receipt.
        let result = self.policy.decide(&frame.as_frame(), &instruction, frame_stamp_s(source_stamp, now), Decoding::Cached);
        let latency_ms = start.elapsed().as_secs_f32() * 1e3;
        if let (_, Some(tick)) = self.session.decided(&instruction, &result, now, latency_ms, now) {
            if tick.publish {
                self.emit(&tick.output, time);
            }
        }
        if let Ok(out) = result {
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

    fn message(&mut self, m: &RawMessage<'_>) {
        self.advance(m.log_time);
        self.span.0 = self.span.0.min(m.log_time);
        self.span.1 = self.span.1.max(m.log_time);
        let skip = |skipped: &mut BTreeMap<String, u64>| {
            *skipped.entry(format!("{} ({})", m.topic, m.type_name)).or_default() += 1;
        };
        if m.encoding != "cdr" {
            return skip(&mut self.skipped);
        }
        if m.topic == self.opts.image_topic {
            let Some(frame) = camera_frame(m.type_name, m.data) else {
                return skip(&mut self.skipped);
            };
            self.frames_seen += 1;
            match frame {
                Ok((frame, stamp)) => self.frame(frame, stamp, m.log_time),
                Err(_) => self.session.bad_frame(),
            }
        } else if m.topic == self.opts.instruction_topic && m.type_name == "std_msgs/msg/String" {
            if self.fixed_instruction {
                return skip(&mut self.skipped);
            }
            let text = decode::<StringMsg>(m.data).ok().map(|s| s.data);
            self.instruction(text, m.log_time);
        } else {
            skip(&mut self.skipped);
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
    out.add_topic::<Header>(REPLAY_FRAMES, TopicQos::SensorData)?;
    policy.reset();
    let mut replay = Replay {
        session: Session::new(opts.control, 100_000)?,
        period_ns: (opts.control.period_s() * 1e9).round().max(1.0) as u64,
        policy,
        out,
        opts,
        fixed_instruction: opts.instruction.is_some(),
        origin: None,
        next_tick: None,
        skipped: BTreeMap::new(),
        span: (u64::MAX, 0),
        frames_seen: 0,
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
    if replay.frames_seen == 0 {
        return Err(ReplayError::NoFrames(opts.image_topic.clone()));
    }
    // Run on past the last message until the watchdog has had its say.
    let end = replay.span.1 + ((opts.control.image_timeout_s + 2.0 * opts.control.period_s()) * 1e9) as u64;
    replay.advance(end);
    if let Some(e) = replay.error {
        return Err(e.into());
    }
    Ok(ReplaySummary {
        read,
        counters: replay.session.counters().clone(),
        skipped: replay.skipped,
        latency: replay.session.latency().clone(),
        span: replay.span,
    })
}
