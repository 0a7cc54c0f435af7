//! The ROS 2 managed-node state machine (design.ros2.org "Managed nodes"), which r2r lacks: the
//! primary states, the transitions between them and the `lifecycle_msgs` values a lifecycle
//! client (nav2_lifecycle_manager, `ros2 lifecycle`) sees. What each transition does to the robot
//! is the control task's business; this module only says which transitions exist where.

use r2r::lifecycle_msgs::msg::{State as StateMsg, Transition as TransitionMsg, TransitionDescription};

/// A TransitionEvent's (transition, start_state, goal_state).
pub type EventParts = (TransitionMsg, StateMsg, StateMsg);

/// A primary state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    Unconfigured,
    Inactive,
    Active,
    Finalized,
}

impl Primary {
    pub const ALL: [Primary; 4] = [Self::Unconfigured, Self::Inactive, Self::Active, Self::Finalized];

    pub fn id(self) -> u8 {
        match self {
            Self::Unconfigured => 1,
            Self::Inactive => 2,
            Self::Active => 3,
            Self::Finalized => 4,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Unconfigured => "unconfigured",
            Self::Inactive => "inactive",
            Self::Active => "active",
            Self::Finalized => "finalized",
        }
    }

    pub fn msg(self) -> StateMsg {
        state(self.id(), self.label())
    }

    /// The transitions a client may ask for here, in the standard's order.
    pub fn transitions(self) -> &'static [Transition] {
        match self {
            Self::Unconfigured => &[Transition::Configure, Transition::Shutdown],
            Self::Inactive => &[Transition::Cleanup, Transition::Activate, Transition::Shutdown],
            Self::Active => &[Transition::Deactivate, Transition::Shutdown],
            Self::Finalized => &[],
        }
    }
}

/// A transition a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Configure,
    Cleanup,
    Activate,
    Deactivate,
    Shutdown,
}

/// The transition states between primary states, as (id, label).
const ERROR_PROCESSING: (u8, &str) = (15, "errorprocessing");

impl Transition {
    pub const ALL: [Transition; 5] = [Self::Configure, Self::Cleanup, Self::Activate, Self::Deactivate, Self::Shutdown];

    pub fn label(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Cleanup => "cleanup",
            Self::Activate => "activate",
            Self::Deactivate => "deactivate",
            Self::Shutdown => "shutdown",
        }
    }

    /// Its id when asked for from `from` (shutdown has one per primary state).
    pub fn id(self, from: Primary) -> u8 {
        match (self, from) {
            (Self::Configure, _) => 1,
            (Self::Cleanup, _) => 2,
            (Self::Activate, _) => 3,
            (Self::Deactivate, _) => 4,
            (Self::Shutdown, Primary::Unconfigured) => 5,
            (Self::Shutdown, Primary::Inactive) => 6,
            (Self::Shutdown, _) => 7,
        }
    }

    /// The transition state it passes through, as (id, label).
    fn transition_state(self) -> (u8, &'static str) {
        match self {
            Self::Configure => (10, "configuring"),
            Self::Cleanup => (11, "cleaningup"),
            Self::Shutdown => (12, "shuttingdown"),
            Self::Activate => (13, "activating"),
            Self::Deactivate => (14, "deactivating"),
        }
    }

    /// Where it ends when its work succeeds.
    pub fn goal(self) -> Primary {
        match self {
            Self::Configure | Self::Deactivate => Primary::Inactive,
            Self::Cleanup => Primary::Unconfigured,
            Self::Activate => Primary::Active,
            Self::Shutdown => Primary::Finalized,
        }
    }

    /// The id of the second half of a transition (`TRANSITION_ON_<X>_SUCCESS` or `_FAILURE`).
    fn outcome_id(self, success: bool) -> u8 {
        let base = match self {
            Self::Configure => 10,
            Self::Cleanup => 20,
            Self::Activate => 30,
            Self::Deactivate => 40,
            Self::Shutdown => 50,
        };
        if success {
            base
        } else {
            base + 1
        }
    }

    /// The transition a ChangeState request names from `from`: by id, or by label when the id is
    /// 0 (as `ros2 lifecycle set` and rclcpp accept). None when it is not available there.
    pub fn requested(id: u8, label: &str, from: Primary) -> Option<Transition> {
        from.transitions().iter().copied().find(|t| if id == 0 { t.label() == label } else { t.id(from) == id })
    }

    pub fn msg(self, from: Primary) -> TransitionMsg {
        TransitionMsg { id: self.id(from), label: self.label().to_owned() }
    }

    /// The first half of a transition as a TransitionEvent's (transition, start, goal): from the
    /// primary state into the transition state.
    pub fn started(self, from: Primary) -> EventParts {
        let (id, label) = self.transition_state();
        (self.msg(from), from.msg(), state(id, label))
    }

    /// The second half: from the transition state to `to` (the goal, or back where it started).
    pub fn finished(self, success: bool, to: Primary) -> EventParts {
        let (id, label) = self.transition_state();
        let outcome = TransitionMsg {
            id: self.outcome_id(success),
            label: if success { "transition_success" } else { "transition_failure" }.to_owned(),
        };
        (outcome, state(id, label), to.msg())
    }
}

fn state(id: u8, label: &str) -> StateMsg {
    StateMsg { id, label: label.to_owned() }
}

/// Every state a managed node can be in, primary and transition states (GetAvailableStates).
pub fn all_states() -> Vec<StateMsg> {
    let transition_states = Transition::ALL.iter().map(|t| t.transition_state()).chain([ERROR_PROCESSING]);
    Primary::ALL.iter().map(|p| p.msg()).chain(transition_states.map(|(id, label)| state(id, label))).collect()
}

/// The transitions available from `from` (GetAvailableTransitions): each into its transition state.
pub fn available_transitions(from: Primary) -> Vec<TransitionDescription> {
    from.transitions()
        .iter()
        .map(|t| {
            let (transition, start_state, goal_state) = t.started(from);
            TransitionDescription { transition, start_state, goal_state }
        })
        .collect()
}
