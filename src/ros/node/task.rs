//! The control task: the one owner of the control `Session`, the inference worker and the
//! lifecycle state. Every input arrives here as a `ControlEvent`, in order.
//!
//! Arming: the robot moves only when the node is active (lifecycle) and enabled. Enabled comes
//! from `~/enable`, the lifecycle's activate, or (unmanaged start only) `start_enabled`; the
//! e-stop disables and refuses enabling while engaged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::channel::mpsc::UnboundedSender;
use futures::executor::LocalSpawner;
use futures::prelude::*;
use r2r::lifecycle_msgs::msg::TransitionEvent;
use r2r::lifecycle_msgs::srv::{ChangeState, GetAvailableStates, GetAvailableTransitions, GetState};
use r2r::std_srvs::srv::SetBool;
use r2r::ServiceRequest;

use super::goal::{outcome, Goals};
use super::io::{Clocks, ControlEvent, Exit, NodeError, Outputs, Received};
use crate::control::{Applied, Session, Tick};
use crate::policy::{FrameDecision, FrameJob, InferenceWorker, Policy};
use crate::ros::convert::{self, DecisionContext};
use crate::ros::lifecycle::{self, Primary, Transition};
use crate::ros::logging::{held_note, preview, Throttle};
use crate::ros::params::NodeParams;

/// The model, once configured.
pub(super) struct Model {
    pub worker: InferenceWorker,
    pub id: String,
    pub names: Vec<String>,
    pub trained: bool,
}

/// What the control task starts with.
pub(super) struct Setup {
    pub params: NodeParams,
    pub rate_changes: UnboundedSender<f64>,
    pub session: Session,
    pub outputs: Outputs,
    pub clocks: Clocks,
    pub throttle: Throttle,
    pub exit: Exit,
    pub spawner: LocalSpawner,
    pub events: UnboundedSender<ControlEvent>,
    /// The node's fully qualified name, for diagnostics.
    pub name: String,
}

pub(super) struct ControlTask {
    /// The parameters in force.
    pub params: NodeParams,
    /// New control periods (s), for the loop that owns the tick timer.
    rate_changes: UnboundedSender<f64>,
    pub session: Session,
    pub outputs: Outputs,
    pub clocks: Clocks,
    pub throttle: Throttle,
    pub exit: Exit,
    pub name: String,
    pub state: Primary,
    /// The transition under way (only configure takes time: the model loads on its own thread),
    /// with the ChangeState request to answer when it ends (none when the node started itself).
    pending: Option<(Transition, Option<ServiceRequest<ChangeState::Service>>)>,
    /// An unmanaged node configuring and activating itself at start-up.
    pub starting_itself: bool,
    pub model: Option<Model>,
    /// The FollowInstruction goal being followed, if the instruction came from one.
    goals: Goals,
    /// The newest good frame, decided for a new instruction when no frame waits for the model.
    newest: Option<Received>,
    /// The camera's frame_id, which decisions carry with the camera's stamp.
    camera_frame: String,
    /// To forward each accepted goal's cancel requests to this task.
    pub spawner: LocalSpawner,
    pub events: UnboundedSender<ControlEvent>,
}

impl ControlTask {
    pub fn new(s: Setup) -> Self {
        Self {
            params: s.params,
            rate_changes: s.rate_changes,
            session: s.session,
            outputs: s.outputs,
            clocks: s.clocks,
            throttle: s.throttle,
            exit: s.exit,
            name: s.name,
            state: Primary::Unconfigured,
            pending: None,
            starting_itself: false,
            model: None,
            goals: Goals::default(),
            newest: None,
            camera_frame: String::new(),
            spawner: s.spawner,
            events: s.events,
        }
    }

    pub async fn run(mut self, mut events: impl Stream<Item = ControlEvent> + Unpin) {
        // Disarmed until something arms it, whatever the start.
        self.session.set_enabled(false);
        if !self.params.node.managed {
            self.starting_itself = true;
            self.begin(Transition::Configure, None);
        }
        while let Some(event) = events.next().await {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Frame(frame) => self.frame(frame),
            ControlEvent::BadFrame(e) => {
                self.session.bad_frame();
                if let Some(held) = self.throttle.allow(e.kind()) {
                    tracing::error!("dropping camera frame: {e}{}", held_note(held));
                }
            }
            ControlEvent::Instruction(Ok(text)) => {
                self.goals.end(outcome::PREEMPTED, "replaced by an instruction on the instruction topic");
                tracing::info!("new instruction: \"{}\"", preview(&text));
                self.instruct(text.into());
            }
            ControlEvent::Instruction(Err(e)) => {
                self.goals.end(outcome::PREEMPTED, "replaced by an invalid instruction on the instruction topic");
                if let Some(held) = self.throttle.allow(e.kind()) {
                    tracing::error!("rejected instruction, stopping until a valid one: {e}{}", held_note(held));
                }
                self.session.reject_instruction();
                self.tick();
            }
            ControlEvent::Enable(request) => self.enable(request),
            ControlEvent::EStop(engaged) => self.estop(engaged),
            ControlEvent::Heartbeat(held) => {
                let now = self.clocks.now();
                self.session.heartbeat(now, held);
            }
            ControlEvent::Goal(request) => match self.goals.accept(request, &self.spawner, &self.events) {
                Ok(Some(instruction)) => {
                    self.instruct(instruction);
                    self.tick();
                    // A goal given while disarmed ends at once, saying so.
                    let stop = self.session.stop().cloned();
                    self.goals.stop_changed(stop.as_ref(), self.starting_itself);
                }
                Ok(None) => {}
                Err(e) => tracing::error!("cannot take a follow_instruction goal: {e}"),
            },
            ControlEvent::CancelGoal(request) => {
                if let Some(cancelled) = self.goals.cancel(request) {
                    self.session.clear_instruction();
                    self.tick();
                    cancelled.finish();
                }
            }
            ControlEvent::FrameDecision(decided) => self.decided(decided),
            ControlEvent::Params(name, next) => self.params_changed(&name, *next),
            ControlEvent::ChangeState(request) => self.change_state(request),
            ControlEvent::GetState(request) => {
                let state = self.state.msg();
                respond(request.respond(GetState::Response { current_state: state }), "get_state");
            }
            ControlEvent::GetAvailableStates(request) => {
                let states = lifecycle::all_states();
                respond(request.respond(GetAvailableStates::Response { available_states: states }), "get_available_states");
            }
            ControlEvent::GetAvailableTransitions(request) => {
                let transitions = if self.pending.is_some() { Vec::new() } else { lifecycle::available_transitions(self.state) };
                let response = GetAvailableTransitions::Response { available_transitions: transitions };
                respond(request.respond(response), "get_available_transitions");
            }
            ControlEvent::Loaded(result) => self.loaded(result),
            ControlEvent::Tick => self.tick(),
            ControlEvent::Diagnostics => self.diagnostics(),
        }
    }

    fn frame(&mut self, frame: Received) {
        self.camera_frame.clone_from(&frame.frame_id);
        let check = self.session.frame_received(frame.at, frame.source_stamp);
        if !check.is_fresh() {
            if let (crate::control::FrameCheck::Late { lag_s }, Some(held)) = (check, self.throttle.allow("late_frame")) {
                tracing::warn!(
                    "camera frame stamped {lag_s:.2} s from ROS time, beyond max_frame_latency_s: not decided on{}",
                    held_note(held)
                );
            }
            return;
        }
        // Without an instruction, or unless active, there is nothing to decide; the frame still fed
        // the watchdog, and is kept for the first instruction.
        if let (Some(instruction), Some(model)) = (self.session.instruction().cloned(), self.active_model()) {
            if model.worker.submit(job(&frame, instruction, frame.received)) {
                self.session.frame_dropped();
            }
        }
        self.newest = Some(frame);
    }

    /// ~/enable: arms only an active node with no e-stop engaged.
    fn enable(&mut self, request: ServiceRequest<SetBool::Service>) {
        let enable = request.message.data;
        let (success, message) = if enable && self.state != Primary::Active {
            (false, format!("refused: the node is {}; activate it through the lifecycle first", self.state.label()))
        } else if !self.session.set_enabled(enable) {
            (false, "refused: the e-stop is engaged; release it first".to_owned())
        } else if enable {
            (true, "enabled: armed".to_owned())
        } else {
            (true, "disabled: stopped and holding".to_owned())
        };
        if success {
            tracing::info!("{} through ~/enable", if enable { "ARMED" } else { "disabled" });
        } else {
            tracing::warn!("~/enable {enable}: {message}");
        }
        respond(request.respond(SetBool::Response { success, message }), "~/enable");
        self.tick();
    }

    fn estop(&mut self, engaged: bool) {
        if engaged == self.session.estop() {
            return;
        }
        self.session.set_estop(engaged);
        if engaged {
            tracing::warn!("E-STOP engaged: stopped and disarmed");
        } else {
            tracing::info!("e-stop released; still disarmed until ~/enable");
        }
        self.tick();
    }

    /// Applies a parameter set through the parameter services (already checked by `LiveParams`):
    /// `name` is the one set, `next` the whole new set.
    fn params_changed(&mut self, name: &str, next: NodeParams) {
        let config = next.control_config();
        if config != *self.session.config() {
            if let Err(e) = self.session.set_config(config) {
                tracing::error!("cannot apply the changed controller parameters: {e}");
                return;
            }
            if config.control_rate_hz != self.params.control.control_rate_hz {
                let _ = self.rate_changes.unbounded_send(config.period_s());
            }
            tracing::info!("controller parameter {name} changed: applied from this tick on");
        }
        self.params = next;
        if name == "instruction" {
            let text = self.params.node.instruction.trim().to_owned();
            self.goals.end(outcome::PREEMPTED, "replaced by the instruction parameter");
            if text.is_empty() {
                tracing::info!("instruction parameter cleared: stopping");
                self.session.clear_instruction();
            } else {
                tracing::info!("new instruction from the instruction parameter: \"{}\"", preview(&text));
                self.instruct(text.into());
            }
        }
        self.tick();
    }

    /// A valid instruction from the topic, a goal or the parameter. It applies to the frame waiting
    /// for the model; with none waiting, the newest frame is decided for it at once if it is still
    /// fresh, so the robot need not wait a camera period to react.
    pub fn instruct(&mut self, text: Arc<str>) {
        self.session.instruct(text.clone());
        let Some(model) = self.active_model() else {
            return;
        };
        if !model.worker.retarget(&text) {
            let fresh = self.session.camera_problem(self.clocks.now()).is_none();
            if let Some(frame) = self.newest.as_ref().filter(|_| fresh) {
                // Latency counts from the instruction: the frame waited for it, not for the model.
                model.worker.submit(job(frame, text, Instant::now()));
            }
        }
    }

    /// The model, while the node is active (an inactive node decides nothing).
    fn active_model(&self) -> Option<&Model> {
        self.model.as_ref().filter(|_| self.state == Primary::Active)
    }

    fn decided(&mut self, d: FrameDecision) {
        let now = self.clocks.now();
        let (applied, tick) = self.session.decided(&d.instruction, &d.result, d.frame_time, d.latency_ms, now);
        if let Some(tick) = tick {
            // The command goes out at once rather than waiting for the next tick, before the report.
            self.publish(tick);
        }
        if applied == Applied::Stale {
            return;
        }
        match &d.result {
            Err(e) => {
                if let Some(held) = self.throttle.allow("failed_decision") {
                    tracing::error!("decision failed, stopping: {e}{}", held_note(held));
                }
                self.goals.failed(&e.to_string());
            }
            Ok(out) => {
                let Some(model) = &self.model else {
                    return;
                };
                let info = DecisionContext {
                    // The camera's stamp and frame: which frame this decision was made on.
                    header: convert::header(d.source_stamp, &self.camera_frame),
                    instruction: &d.instruction,
                    names: &model.names,
                    latency_ms: d.latency_ms,
                    model_id: &model.id,
                };
                let msg = convert::decision(out, info);
                if let Err(e) = self.outputs.decision.publish(&msg) {
                    tracing::warn!("cannot publish ~/decision: {e}");
                }
                self.goals.decision(msg, &applied);
            }
        }
    }

    pub fn tick(&mut self) {
        if self.model.as_ref().is_some_and(|m| !m.worker.is_alive()) && self.exit.borrow().is_none() {
            tracing::error!("the inference thread died: stopping the robot and shutting down");
            self.session.inference_died();
            *self.exit.borrow_mut() = Some(Err(NodeError::InferenceDied));
        }
        let tick = self.session.tick(self.clocks.now());
        self.publish(tick);
    }

    /// Publishes a tick's command (unless the node has gone quiet); a change of stop is logged and
    /// reported to the goal.
    pub fn publish(&mut self, tick: Tick) {
        if tick.stop_changed {
            match &tick.output.stop {
                Some(reason) => tracing::info!("stopping: {reason}"),
                None => tracing::info!("following \"{}\"", self.session.instruction().map_or("", |i| preview(i))),
            }
            self.goals.stop_changed(tick.output.stop.as_ref(), self.starting_itself);
        }
        if tick.publish {
            if let Err(e) = self.outputs.publish(&tick.output, self.clocks.ros_now()) {
                tracing::error!("cannot publish commands: {e}");
            }
        }
    }

    /// A ChangeState request: refused while another transition runs or when the transition is
    /// not available in this state; otherwise begun, and answered when it ends.
    fn change_state(&mut self, request: ServiceRequest<ChangeState::Service>) {
        let asked = &request.message.transition;
        let transition = Transition::requested(asked.id, &asked.label, self.state);
        match transition.filter(|_| self.pending.is_none()) {
            Some(transition) => self.begin(transition, Some(request)),
            None => {
                tracing::warn!(
                    "lifecycle: refused transition {} '{}' in state {}{}",
                    asked.id,
                    asked.label,
                    self.state.label(),
                    if self.pending.is_some() { " (another transition is under way)" } else { "" }
                );
                respond(request.respond(ChangeState::Response { success: false }), "change_state");
            }
        }
    }

    fn begin(&mut self, transition: Transition, request: Option<ServiceRequest<ChangeState::Service>>) {
        let from = self.state;
        self.transition_event(transition.started(from));
        match transition {
            Transition::Configure => {
                self.pending = Some((transition, request));
                self.load_model();
            }
            Transition::Cleanup => {
                self.model = None;
                self.finish(transition, from, true, request);
            }
            Transition::Activate => {
                // Activation arms, unless the e-stop holds (then it fails, and says why).
                let armed = self.session.set_enabled(true);
                if !armed {
                    tracing::warn!("lifecycle: cannot activate while the e-stop is engaged");
                }
                self.finish(transition, from, armed, request);
            }
            Transition::Deactivate => {
                self.session.set_enabled(false);
                self.finish(transition, from, true, request);
            }
            Transition::Shutdown => {
                self.session.set_enabled(false);
                self.goals.end(outcome::STOPPED_BY_SAFETY, "the node is shutting down");
                self.model = None;
                self.finish(transition, from, true, request);
            }
        }
    }

    /// Ends a transition: the new state, its event, the answer to the request, and the stop.
    fn finish(
        &mut self,
        transition: Transition,
        from: Primary,
        success: bool,
        request: Option<ServiceRequest<ChangeState::Service>>,
    ) {
        self.state = if success { transition.goal() } else { from };
        self.transition_event(transition.finished(success, self.state));
        tracing::info!(
            "lifecycle: {} {} -> {}",
            transition.label(),
            if success { "succeeded" } else { "failed" },
            self.state.label()
        );
        if let Some(request) = request {
            respond(request.respond(ChangeState::Response { success }), "change_state");
        }
        self.tick();
    }

    /// Configure: the model loads on a thread of its own, so the node keeps answering meanwhile.
    fn load_model(&mut self) {
        let dir = self.params.model_dir();
        let device = self.params.device();
        let threads = self.params.inference_threads();
        let events = self.events.clone();
        let load = move || -> Result<Box<Policy>, NodeError> {
            let dir: PathBuf = dir?;
            let model_err = |source| NodeError::Model { dir: dir.clone(), source };
            let mut policy = Policy::load(&dir, &device?).map_err(model_err)?;
            if let Some(threads) = threads? {
                policy.set_threads(threads).map_err(model_err)?;
            }
            tracing::info!(
                "model '{}' from {} ({} parameters, {} active per token){}; {} inference threads",
                policy.model_id(),
                dir.display(),
                policy.params().total,
                policy.params().active_per_token,
                if policy.config().trained { "" } else { " -- UNTRAINED: its commands are meaningless" },
                policy.threads(),
            );
            Ok(Box::new(policy))
        };
        let spawned = std::thread::Builder::new().name("moe_vla-configure".into()).spawn(move || {
            let _ = events.unbounded_send(ControlEvent::Loaded(load()));
        });
        if let Err(e) = spawned {
            self.loaded(Err(e.into()));
        }
    }

    fn loaded(&mut self, result: Result<Box<Policy>, NodeError>) {
        let Some((transition, request)) = self.pending.take() else {
            return;
        };
        let started_itself = request.is_none();
        let model = result.and_then(|policy| {
            let id = policy.model_id().to_owned();
            let names = policy.action_space().names().to_vec();
            let trained = policy.config().trained;
            let events = self.events.clone();
            let worker = InferenceWorker::spawn(*policy, move |decided| {
                let _ = events.unbounded_send(ControlEvent::FrameDecision(decided));
            })?;
            Ok(Model { worker, id, names, trained })
        });
        match model {
            Ok(model) => {
                self.model = Some(model);
                self.finish(transition, Primary::Unconfigured, true, request);
                if started_itself {
                    // An unmanaged node activates itself, armed only if start_enabled says so.
                    self.transition_event(Transition::Activate.started(Primary::Inactive));
                    self.state = Primary::Active;
                    self.transition_event(Transition::Activate.finished(true, Primary::Active));
                    if self.params.node.start_enabled {
                        self.session.set_enabled(true);
                        tracing::warn!("ARMED at start-up (start_enabled): the robot moves when it has an instruction");
                    }
                    self.tick();
                }
            }
            Err(e) => {
                tracing::error!("lifecycle: configure failed: {}", chain(&e));
                self.finish(transition, Primary::Unconfigured, false, request);
                if started_itself {
                    *self.exit.borrow_mut() = Some(Err(e));
                }
            }
        }
        if std::mem::take(&mut self.starting_itself) {
            // A goal that waited for the start-up learns whether the node armed.
            let stop = self.session.stop().cloned();
            self.goals.stop_changed(stop.as_ref(), false);
        }
    }

    fn transition_event(&self, (transition, start_state, goal_state): lifecycle::EventParts) {
        let timestamp = self.clocks.ros_now().as_nanos() as u64;
        let event = TransitionEvent { timestamp, transition, start_state, goal_state };
        if let Err(e) = self.outputs.transition_event.publish(&event) {
            tracing::warn!("cannot publish ~/transition_event: {e}");
        }
    }
}

/// The frame as a job for the model, to be decided for `instruction`; `asked` starts its latency.
fn job(frame: &Received, instruction: Arc<str>, asked: Instant) -> FrameJob {
    FrameJob { frame: frame.frame.clone(), instruction, source_stamp: frame.source_stamp, received_at: frame.at.ros, asked }
}

fn respond(result: r2r::Result<()>, service: &str) {
    if let Err(e) = result {
        tracing::warn!("cannot answer {service}: {e}");
    }
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
