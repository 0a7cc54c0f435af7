//! The controller's settings as flat named parameters: the names `moe_vla_node` declares and
//! `moe_vla replay --params-file` reads, turned into a `ControlConfig` in this one place.

use serde::{Deserialize, Serialize};

use super::{AxisLimit, ControlConfig, GaitLimit, GaitLimits};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlParams {
    pub control_rate_hz: f64,
    pub image_timeout_s: f64,
    pub max_decision_age_s: f64,
    pub require_new_stamps: bool,
    pub min_linear_x: f64,
    pub max_linear_x: f64,
    pub max_linear_y: f64,
    pub max_angular_z: f64,
    pub max_accel_x: f64,
    pub max_accel_y: f64,
    pub max_accel_z: f64,
    pub min_body_height: f64,
    pub max_body_height: f64,
    pub max_body_height_rate: f64,
    pub min_step_frequency: f64,
    pub max_step_frequency: f64,
    pub max_step_frequency_rate: f64,
    pub max_phase_offset_rate: f64,
    pub min_footswing_height: f64,
    pub max_footswing_height: f64,
    pub max_footswing_height_rate: f64,
    pub min_pitch: f64,
    pub max_pitch: f64,
    pub max_pitch_rate: f64,
    pub min_stance_width: f64,
    pub max_stance_width: f64,
    pub max_stance_width_rate: f64,
}

/// The defaults of the node and the controller. The gait limits suit a Go2-class robot (about
/// 0.3 m nominal body height): crouch at most 0.25 m, never pitch more than 0.3 rad either way.
impl Default for ControlParams {
    fn default() -> Self {
        Self {
            control_rate_hz: 10.0,
            image_timeout_s: 0.5,
            max_decision_age_s: 1.0,
            require_new_stamps: true,
            min_linear_x: -0.5,
            max_linear_x: 1.0,
            max_linear_y: 0.5,
            max_angular_z: 1.0,
            max_accel_x: 1.0,
            max_accel_y: 1.0,
            max_accel_z: 2.0,
            min_body_height: -0.25,
            max_body_height: 0.05,
            max_body_height_rate: 0.5,
            min_step_frequency: 2.0,
            max_step_frequency: 4.0,
            max_step_frequency_rate: 2.0,
            max_phase_offset_rate: 2.0,
            min_footswing_height: 0.05,
            max_footswing_height: 0.15,
            max_footswing_height_rate: 0.2,
            min_pitch: -0.3,
            max_pitch: 0.3,
            max_pitch_rate: 0.5,
            min_stance_width: 0.2,
            max_stance_width: 0.4,
            max_stance_width_rate: 0.2,
        }
    }
}

impl ControlParams {
    /// The controller settings; `ControlConfig::validate` (run by `Controller::new`) checks them.
    pub fn to_config(&self) -> ControlConfig {
        let f = |v: f64| v as f32;
        let gait = |min: f64, max: f64, rate: f64| GaitLimit { min: f(min), max: f(max), max_rate: f(rate) };
        ControlConfig {
            control_rate_hz: self.control_rate_hz,
            image_timeout_s: self.image_timeout_s,
            max_decision_age_s: self.max_decision_age_s,
            require_new_stamps: self.require_new_stamps,
            x_vel: AxisLimit { min: f(self.min_linear_x), max: f(self.max_linear_x), max_accel: f(self.max_accel_x) },
            y_vel: AxisLimit::symmetric(f(self.max_linear_y), f(self.max_accel_y)),
            yaw_vel: AxisLimit::symmetric(f(self.max_angular_z), f(self.max_accel_z)),
            gait: GaitLimits {
                body_height: gait(self.min_body_height, self.max_body_height, self.max_body_height_rate),
                step_frequency: gait(self.min_step_frequency, self.max_step_frequency, self.max_step_frequency_rate),
                phase_offset: gait(0.0, 1.0, self.max_phase_offset_rate),
                footswing_height: gait(self.min_footswing_height, self.max_footswing_height, self.max_footswing_height_rate),
                pitch: gait(self.min_pitch, self.max_pitch, self.max_pitch_rate),
                stance_width: gait(self.min_stance_width, self.max_stance_width, self.max_stance_width_rate),
            },
        }
    }
}
