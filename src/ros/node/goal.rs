//! The follow_instruction action: a goal's instruction replaces the current one, as on the topic;
//! feedback on each decision and each change of stop; the goal ends when the model terminates, when
//! it is cancelled or preempted, or when a safety stop needs an operator. The control task owns
//! one `Goals`; this file knows nothing of the task.

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::executor::LocalSpawner;
use futures::prelude::*;
use futures::task::{LocalSpawnExt, SpawnError};
use r2r::moe_vla_msgs::action::FollowInstruction;
use r2r::moe_vla_msgs::msg::VlaDecision;
use r2r::{ActionServerCancelRequest, ActionServerGoal, ActionServerGoalRequest};

use super::io::ControlEvent;
use crate::control::{Applied, StopReason};
use crate::policy::tokenize::accept_instruction;
use crate::ros::logging::preview;
use crate::ros::streams::forward;

/// Failed decisions in a row that end a goal: one corrupt frame stops the robot until a good
/// decision, but does not end the goal.
const GOAL_FAILURE_TOLERANCE: u32 = 3;

struct ActiveGoal {
    handle: ActionServerGoal<FollowInstruction::Action>,
    instruction: Arc<str>,
    decisions: u32,
    failures_in_a_row: u32,
    feedback: FollowInstruction::Feedback,
}

/// FollowInstruction result outcomes (r2r's message constants are bindgen integers; the field is a byte).
pub(super) mod outcome {
    use r2r::moe_vla_msgs::action::FollowInstruction::Result;
    pub const TERMINATED: u8 = Result::TERMINATED as u8;
    pub const CANCELLED: u8 = Result::CANCELLED as u8;
    pub const STOPPED_BY_SAFETY: u8 = Result::STOPPED_BY_SAFETY as u8;
    pub const PREEMPTED: u8 = Result::PREEMPTED as u8;
}

#[derive(Debug, thiserror::Error)]
pub(super) enum GoalError {
    #[error(transparent)]
    Ros(#[from] r2r::Error),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// The FollowInstruction goal being followed, if the instruction came from one.
#[derive(Default)]
pub(super) struct Goals {
    active: Option<ActiveGoal>,
}

impl Goals {
    /// A new goal: a valid one is accepted, preempting the goal still running, and its
    /// instruction returned for the task to follow; an invalid one is rejected (None).
    pub(super) fn accept(
        &mut self,
        request: ActionServerGoalRequest<FollowInstruction::Action>,
        spawner: &LocalSpawner,
        events: &UnboundedSender<ControlEvent>,
    ) -> Result<Option<Arc<str>>, GoalError> {
        let text = match accept_instruction(&request.goal.instruction) {
            Ok(text) => text.to_owned(),
            Err(e) => {
                tracing::error!("rejected follow_instruction goal: {e}");
                request.reject()?;
                return Ok(None);
            }
        };
        let (handle, cancels) = request.accept()?;
        self.end(outcome::PREEMPTED, "replaced by a newer goal");
        spawner.spawn_local(forward(cancels.map(ControlEvent::CancelGoal), events.clone()))?;
        tracing::info!("new instruction from a follow_instruction goal: \"{}\"", preview(&text));
        let instruction: Arc<str> = text.into();
        self.active = Some(ActiveGoal {
            handle,
            instruction: instruction.clone(),
            decisions: 0,
            failures_in_a_row: 0,
            feedback: FollowInstruction::Feedback::default(),
        });
        Ok(Some(instruction))
    }

    /// A cancel request: accepted for the goal being followed, which the caller finishes as
    /// cancelled (`finish_cancelled`) once the robot has been told to stop.
    pub(super) fn cancel(&mut self, request: ActionServerCancelRequest) -> Option<CancelledGoal> {
        let Some(goal) = self.active.take_if(|g| g.handle.uuid == request.uuid) else {
            request.reject();
            return None;
        };
        request.accept();
        tracing::info!("follow_instruction goal cancelled: stopping");
        Some(CancelledGoal(goal))
    }

    /// Feedback for a decision on the goal's instruction; terminate ends the goal.
    pub(super) fn decision(&mut self, decision: VlaDecision, applied: &Applied) {
        let Some(goal) = self.active.as_mut().filter(|g| *g.instruction == *decision.instruction) else {
            return;
        };
        match applied {
            Applied::Followed | Applied::Terminated => {
                goal.decisions += 1;
                goal.failures_in_a_row = 0;
                goal.feedback.decision = decision;
                if let Err(e) = goal.handle.publish_feedback(goal.feedback.clone()) {
                    tracing::warn!("cannot publish follow_instruction feedback: {e}");
                }
                if *applied == Applied::Terminated {
                    self.end(outcome::TERMINATED, "the model ended the episode");
                }
            }
            Applied::Failed => self.end(outcome::STOPPED_BY_SAFETY, "the model produced a non-finite command"),
            Applied::Stale => {}
        }
    }

    /// A decision on the goal's instruction failed (a corrupt frame, a model error): the robot
    /// stands meanwhile; several in a row end the goal.
    pub(super) fn failed(&mut self, reason: &str) {
        let Some(goal) = self.active.as_mut() else {
            return;
        };
        goal.failures_in_a_row += 1;
        if goal.failures_in_a_row >= GOAL_FAILURE_TOLERANCE {
            self.end(outcome::STOPPED_BY_SAFETY, &format!("{GOAL_FAILURE_TOLERANCE} decisions in a row failed: {reason}"));
        }
    }

    /// Feedback when the robot stops or moves again; stops that need an operator end the goal.
    /// `starting`: an unmanaged node still loading its model, which arms itself (or not) when the
    /// load ends, so a goal given meanwhile waits for that rather than ending as disarmed.
    pub(super) fn stop_changed(&mut self, stop: Option<&StopReason>, starting: bool) {
        let Some(goal) = self.active.as_mut() else {
            return;
        };
        goal.feedback.stopped = stop.is_some();
        goal.feedback.stop_reason = stop.map_or(String::new(), ToString::to_string);
        if let Err(e) = goal.handle.publish_feedback(goal.feedback.clone()) {
            tracing::warn!("cannot publish follow_instruction feedback: {e}");
        }
        let needs_operator = match stop {
            Some(StopReason::Disabled) => !starting,
            Some(StopReason::EStop | StopReason::InferenceDied | StopReason::NonFinite) => true,
            _ => false,
        };
        if let Some(reason) = stop.filter(|_| needs_operator) {
            self.end(outcome::STOPPED_BY_SAFETY, &reason.to_string());
        }
    }

    /// Ends the goal being followed, if any, with outcome `code`.
    pub(super) fn end(&mut self, code: u8, message: &str) {
        if let Some(goal) = self.active.take() {
            finish(goal, code, message);
        }
    }
}

/// A goal whose cancel was accepted, to finish once the robot has been told to stop.
pub(super) struct CancelledGoal(ActiveGoal);

impl CancelledGoal {
    pub(super) fn finish(self) {
        finish(self.0, outcome::CANCELLED, "cancelled by the client");
    }
}

/// Ends a goal: TERMINATED succeeds, CANCELLED cancels, the rest abort.
fn finish(mut goal: ActiveGoal, code: u8, message: &str) {
    tracing::info!("follow_instruction goal ended: {message}");
    let result = FollowInstruction::Result { outcome: code, message: message.to_owned(), decisions: goal.decisions };
    let sent = match code {
        outcome::TERMINATED => goal.handle.succeed(result),
        outcome::CANCELLED => goal.handle.cancel(result),
        _ => goal.handle.abort(result),
    };
    if let Err(e) = sent {
        tracing::warn!("cannot send the follow_instruction result: {e}");
    }
}
