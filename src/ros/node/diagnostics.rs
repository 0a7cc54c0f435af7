//! /diagnostics: one status each for the camera, inference and the controller, so that a dead
//! camera or an untrained model shows before anything is armed. hardware_id names the node.

use r2r::diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue};

use super::task::ControlTask;
use crate::control::StopReason;
use crate::ros::convert;
use crate::ros::lifecycle::Primary;
use crate::ros::logging::preview;

// r2r's message constants are bindgen integers; the field is a byte.
const OK: u8 = DiagnosticStatus::OK as u8;
const WARN: u8 = DiagnosticStatus::WARN as u8;
const ERROR: u8 = DiagnosticStatus::ERROR as u8;

impl ControlTask {
    pub(super) fn diagnostics(&mut self) {
        let statuses = vec![self.camera_status(), self.inference_status(), self.controller_status()];
        let array = DiagnosticArray { header: convert::header(self.clocks.ros_now(), ""), status: statuses };
        if let Err(e) = self.outputs.diagnostics.publish(&array) {
            tracing::warn!("cannot publish /diagnostics: {e}");
        }
    }

    fn status(&self, part: &str, (level, message): (u8, String), values: Vec<(&str, String)>) -> DiagnosticStatus {
        DiagnosticStatus {
            level,
            name: format!("{}: {part}", self.name.trim_start_matches('/')),
            message,
            hardware_id: self.name.clone(),
            values: values.into_iter().map(|(key, value)| KeyValue { key: key.into(), value }).collect(),
        }
    }

    /// Fresh frames or not, armed or not.
    fn camera_status(&self) -> DiagnosticStatus {
        let c = self.session.counters();
        let level = match self.session.camera_problem(self.clocks.now()) {
            None => (OK, "receiving fresh frames".to_owned()),
            Some(problem @ StopReason::NoFrame) => (WARN, problem.to_string()),
            Some(problem) => (ERROR, problem.to_string()),
        };
        let values = vec![
            ("frames_received", c.frames.to_string()),
            ("frames_not_fresh", c.stale_frames.to_string()),
            ("frames_dropped", c.dropped_frames.to_string()),
            ("bad_frames", c.bad_frames.to_string()),
        ];
        self.status("camera", level, values)
    }

    fn inference_status(&self) -> DiagnosticStatus {
        let c = self.session.counters();
        let ms = |q| self.session.latency().quantile(q).map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let level = match (&self.model, self.session.stop()) {
            (_, Some(reason @ (StopReason::InferenceDied | StopReason::NonFinite | StopReason::DecisionFailed(_)))) => {
                (ERROR, reason.to_string())
            }
            (_, Some(reason @ StopReason::StaleDecision { .. })) => (ERROR, reason.to_string()),
            (None, _) => (WARN, format!("no model loaded (node {})", self.state.label())),
            (Some(model), _) if !model.trained => {
                (WARN, "the model is untrained (moe_vla init): its commands are meaningless".to_owned())
            }
            (Some(_), _) => (OK, "model loaded".to_owned()),
        };
        let values = vec![
            ("model", self.model.as_ref().map_or(String::new(), |m| m.id.clone())),
            ("trained", self.model.as_ref().is_some_and(|m| m.trained).to_string()),
            ("decisions", c.decisions.to_string()),
            ("failed_decisions", c.failed_decisions.to_string()),
            ("stale_decisions", c.stale_decisions.to_string()),
            ("decision_latency_median_ms", ms(0.5)),
            ("decision_latency_p99_ms", ms(0.99)),
        ];
        self.status("inference", level, values)
    }

    fn controller_status(&self) -> DiagnosticStatus {
        let c = self.session.counters();
        let stop = self.session.stop();
        let level = match stop {
            None => (OK, "following the instruction".to_owned()),
            Some(reason @ (StopReason::InferenceDied | StopReason::NonFinite)) => (ERROR, format!("stopped: {reason}")),
            Some(reason @ (StopReason::EStop | StopReason::Deadman)) => (WARN, format!("stopped: {reason}")),
            Some(reason) => (OK, format!("stopped: {reason}")),
        };
        let values = vec![
            ("lifecycle_state", self.state.label().to_owned()),
            ("armed", (self.state == Primary::Active && self.session.enabled()).to_string()),
            ("estop", self.session.estop().to_string()),
            ("instruction", self.session.instruction().map_or(String::new(), |i| preview(i).to_owned())),
            ("bad_instructions", c.bad_instructions.to_string()),
            ("commands_published", c.commands.to_string()),
            ("uptime_s", format!("{:.0}", self.clocks.started.elapsed().as_secs_f64())),
        ];
        self.status("controller", level, values)
    }
}
