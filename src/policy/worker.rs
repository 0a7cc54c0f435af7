//! Inference off the caller's thread with a newest-frame slot: a frame that arrives while the
//! model is busy replaces the one waiting, so latency stays bounded when the camera outpaces the
//! model and nothing queues up. Each frame carries the instruction it is to be decided for; the
//! worker keeps no instruction of its own (the controller holds the one in force).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Decision, Decoding, Frame, OwnedFrame, Policy, PolicyError};

/// What the inference thread runs: the policy, or a stand-in in tests of the thread's faults.
pub trait Decide {
    /// Forgets the history: the next frame starts a new instruction.
    fn reset(&mut self);
    /// Decides on `frame`, taken at `stamp_s` seconds (`FrameJob::stamp_s`).
    fn decide(&mut self, frame: &Frame<'_>, instruction: &str, stamp_s: f64) -> Result<Decision, PolicyError>;
}

impl Decide for Policy {
    fn reset(&mut self) {
        Policy::reset(self);
    }

    fn decide(&mut self, frame: &Frame<'_>, instruction: &str, stamp_s: f64) -> Result<Decision, PolicyError> {
        Policy::decide(self, frame, instruction, stamp_s, Decoding::Cached)
    }
}

/// When a frame was taken, in seconds, for the history's schedule: the camera's stamp, or its
/// receipt time on the controller's clock when the camera leaves the stamp zero.
pub fn frame_stamp_s(source_stamp: Duration, received_at: f64) -> f64 {
    if source_stamp.is_zero() {
        received_at
    } else {
        source_stamp.as_secs_f64()
    }
}

/// A frame waiting for inference.
#[derive(Debug)]
pub struct FrameJob {
    pub frame: Arc<OwnedFrame>,
    /// The instruction in force when the frame arrived. Every instruction given (even the same
    /// text again) is a new `Arc`: a job whose `Arc` differs from the previous job's starts a
    /// fresh history.
    pub instruction: Arc<str>,
    /// The frame's own timestamp (the camera's header stamp), kept exact to the nanosecond.
    pub source_stamp: Duration,
    /// Receipt time on the controller's clock, for the decision-age watchdog.
    pub received_at: f64,
    /// When the model was asked on the wall clock, for latency: the frame's receipt, or the
    /// instruction's arrival for a frame that waited for one.
    pub asked: Instant,
}

impl FrameJob {
    /// When the frame was taken, for the history's schedule (`frame_stamp_s`).
    pub fn stamp_s(&self) -> f64 {
        frame_stamp_s(self.source_stamp, self.received_at)
    }
}

/// A finished decision.
#[derive(Debug)]
pub struct FrameDecision {
    pub instruction: Arc<str>,
    /// The timestamp of the frame it was made on.
    pub source_stamp: Duration,
    /// When that frame was received, on the controller's clock.
    pub frame_time: f64,
    /// Asked (`FrameJob::asked`) -> decision ready.
    pub latency_ms: f32,
    pub result: Result<Decision, PolicyError>,
}

#[derive(Default)]
struct Slot {
    frame: Option<FrameJob>,
    closed: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot holds plain data; a panic elsewhere cannot leave it half-written.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct InferenceWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl InferenceWorker {
    /// Starts the inference thread; `deliver` runs on it after every decision.
    pub fn spawn(
        mut policy: impl Decide + Send + 'static,
        mut deliver: impl FnMut(FrameDecision) + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { slot: Mutex::new(Slot::default()), ready: Condvar::new() });
        let worker = shared.clone();
        let thread = std::thread::Builder::new().name("moe_vla-inference".into()).spawn(move || {
            let mut history_of: Option<Arc<str>> = None;
            loop {
                let job = {
                    let mut slot = worker.lock();
                    loop {
                        if slot.closed {
                            return;
                        }
                        if let Some(job) = slot.frame.take() {
                            break job;
                        }
                        slot = worker.ready.wait(slot).unwrap_or_else(PoisonError::into_inner);
                    }
                };
                if !history_of.as_ref().is_some_and(|given| Arc::ptr_eq(given, &job.instruction)) {
                    policy.reset();
                    history_of = Some(job.instruction.clone());
                }
                let result = policy.decide(&job.frame.as_frame(), &job.instruction, job.stamp_s());
                let latency_ms = job.asked.elapsed().as_secs_f32() * 1e3;
                deliver(FrameDecision {
                    instruction: job.instruction,
                    source_stamp: job.source_stamp,
                    frame_time: job.received_at,
                    latency_ms,
                    result,
                });
            }
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// False once the inference thread has ended (it panicked): no decision will come again.
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A new instruction applies to the frame still waiting as well, so the first decision for it
    /// need not wait for the next frame. False when no frame was waiting.
    pub fn retarget(&self, instruction: &Arc<str>) -> bool {
        match self.shared.lock().frame.as_mut() {
            Some(job) => {
                job.instruction = instruction.clone();
                true
            }
            None => false,
        }
    }

    /// Offers a frame; returns true when it replaced one still waiting (a dropped frame).
    pub fn submit(&self, job: FrameJob) -> bool {
        let replaced = self.shared.lock().frame.replace(job).is_some();
        self.shared.ready.notify_one();
        replaced
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
