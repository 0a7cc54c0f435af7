//! The follow_instruction action: a goal's instruction replaces the current one, as on the topic;
//! feedback on each decision and each change of stop; the goal ends when the model terminates, when
//! it is cancelled or preempted, or when a safety stop needs an operator.

use std::sync::Arc;

use futures::prelude::*;
use futures::task::{LocalSpawnExt, SpawnError};
use r2r::moe_vla_msgs::action::FollowInstruction;
use r2r::moe_vla_msgs::msg::VlaDecision;
use r2r::{ActionServerCancelRequest, ActionServerGoal, ActionServerGoalRequest};

use super::task::{preview, ControlTask};
use super::ControlEvent;
use crate::control::{Applied, StopReason};
use crate::policy::tokenize::accept_instruction;
use crate::ros::streams::forward;

/// Failed decisions in a row that end a goal: one corrupt frame stops the robot until a good
/// decision, but does not end the goal.
const GOAL_FAILURE_TOLERANCE: u32 = 3;

pub(super) struct ActiveGoal {
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

impl ControlTask {
    /// A FollowInstruction goal: its instruction replaces the current one, as on the topic, and
    /// a goal still running is preempted.
    pub(super) fn goal_request(&mut self, request: ActionServerGoalRequest<FollowInstruction::Action>) -> Result<(), GoalError> {
        let text = match accept_instruction(&request.goal.instruction) {
            Ok(text) => text.to_owned(),
            Err(e) => {
                tracing::error!("rejected follow_instruction goal: {e}");
                return Ok(request.reject()?);
            }
        };
        let (handle, cancels) = request.accept()?;
        self.end_goal(outcome::PREEMPTED, "replaced by a newer goal");
        self.spawner.spawn_local(forward(cancels.map(ControlEvent::CancelGoal), self.events.clone()))?;
        tracing::info!("new instruction from a follow_instruction goal: \"{}\"", preview(&text));
        let text: Arc<str> = text.into();
        self.instruct(text.clone());
        self.goal = Some(ActiveGoal {
            handle,
            instruction: text,
            decisions: 0,
            failures_in_a_row: 0,
            feedback: FollowInstruction::Feedback::default(),
        });
        self.tick();
        // A goal given while disarmed ends at once, saying so.
        let stop = self.session.stop().cloned();
        self.goal_stop_changed(stop.as_ref());
        Ok(())
    }

    /// Cancelling the goal being followed stops the robot, which then holds until a new instruction.
    pub(super) fn cancel_goal(&mut self, request: ActionServerCancelRequest) {
        let Some(goal) = self.goal.take_if(|g| g.handle.uuid == request.uuid) else {
            request.reject();
            return;
        };
        request.accept();
        tracing::info!("follow_instruction goal cancelled: stopping");
        self.session.clear_instruction();
        self.tick();
        finish_goal(goal, outcome::CANCELLED, "cancelled by the client");
    }

    /// Feedback for a decision on the goal's instruction; terminate ends the goal.
    pub(super) fn goal_decision(&mut self, decision: VlaDecision, applied: &Applied) {
        let Some(goal) = self.goal.as_mut().filter(|g| *g.instruction == *decision.instruction) else {
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
                    self.end_goal(outcome::TERMINATED, "the model ended the episode");
                }
            }
            Applied::Failed => self.end_goal(outcome::STOPPED_BY_SAFETY, "the model produced a non-finite command"),
            Applied::Stale => {}
        }
    }

    /// A decision on the goal's instruction failed (a corrupt frame, a model error): the robot
    /// stands meanwhile; several in a row end the goal.
    pub(super) fn goal_failed(&mut self, reason: &str) {
        let Some(goal) = self.goal.as_mut() else {
            return;
        };
        goal.failures_in_a_row += 1;
        if goal.failures_in_a_row >= GOAL_FAILURE_TOLERANCE {
            self.end_goal(outcome::STOPPED_BY_SAFETY, &format!("{GOAL_FAILURE_TOLERANCE} decisions in a row failed: {reason}"));
        }
    }

    /// Feedback when the robot stops or moves again; stops that need an operator end the goal.
    pub(super) fn goal_stop_changed(&mut self, stop: Option<&StopReason>) {
        let Some(goal) = self.goal.as_mut() else {
            return;
        };
        goal.feedback.stopped = stop.is_some();
        goal.feedback.stop_reason = stop.map_or(String::new(), ToString::to_string);
        if let Err(e) = goal.handle.publish_feedback(goal.feedback.clone()) {
            tracing::warn!("cannot publish follow_instruction feedback: {e}");
        }
        let needs_operator = match stop {
            // An unmanaged node still loading its model arms itself (or not) when the load ends,
            // so a goal given meanwhile waits for that.
            Some(StopReason::Disabled) => !self.starting_itself,
            Some(StopReason::EStop | StopReason::InferenceDied | StopReason::NonFinite) => true,
            _ => false,
        };
        if let Some(reason) = stop.filter(|_| needs_operator) {
            self.end_goal(outcome::STOPPED_BY_SAFETY, &reason.to_string());
        }
    }

    pub(super) fn end_goal(&mut self, code: u8, message: &str) {
        if let Some(goal) = self.goal.take() {
            finish_goal(goal, code, message);
        }
    }
}

/// Ends a goal: TERMINATED succeeds, CANCELLED cancels, the rest abort.
fn finish_goal(mut goal: ActiveGoal, code: u8, message: &str) {
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
