//! The controller's settings as flat named parameters: the names `moe_vla_node` declares and
//! `moe_vla replay --params-file` reads, each defined once below (name, default, description),
//! and turned into a `ControlConfig` in this one place. The node's declarations, the YAML file
//! and the parameter table of docs/node.md are generated from this table.

use serde::{Deserialize, Serialize};

use super::{AxisLimit, ControlConfig, GaitLimit, GaitLimits};

/// A parameter's value, as the table holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Bool(bool),
}

/// One controller parameter: its name, its description (what `ros2 param describe` shows) and
/// access to its field.
pub struct ParamSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub get: fn(&ControlParams) -> ParamValue,
    /// Sets the field; a value of the other type is refused.
    pub set: fn(&mut ControlParams, ParamValue) -> Result<(), ParamTypeError>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("parameter {name} takes a {expected}")]
pub struct ParamTypeError {
    pub name: &'static str,
    pub expected: &'static str,
}

trait ParamField: Sized {
    const TYPE: &'static str;
    fn value(self) -> ParamValue;
    fn from_value(value: ParamValue) -> Option<Self>;
}

impl ParamField for f64 {
    const TYPE: &'static str = "number";
    fn value(self) -> ParamValue {
        ParamValue::Float(self)
    }
    fn from_value(value: ParamValue) -> Option<Self> {
        match value {
            ParamValue::Float(v) => Some(v),
            ParamValue::Bool(_) => None,
        }
    }
}

impl ParamField for bool {
    const TYPE: &'static str = "boolean";
    fn value(self) -> ParamValue {
        ParamValue::Bool(self)
    }
    fn from_value(value: ParamValue) -> Option<Self> {
        match value {
            ParamValue::Bool(v) => Some(v),
            ParamValue::Float(_) => None,
        }
    }
}

/// Defines `ControlParams` (fields, defaults, serde names) and `ControlParams::SPECS` from one table.
macro_rules! control_params {
    ($($(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr;)+) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ControlParams {
            $($(#[doc = $doc])+ pub $name: $ty,)+
        }

        impl Default for ControlParams {
            fn default() -> Self {
                Self { $($name: $default,)+ }
            }
        }

        impl ControlParams {
            /// Every controller parameter, in declaration order.
            pub const SPECS: &'static [ParamSpec] = &[$(ParamSpec {
                name: stringify!($name),
                description: concat!($($doc),+),
                get: |p| p.$name.value(),
                set: |p, v| {
                    p.$name = <$ty>::from_value(v)
                        .ok_or(ParamTypeError { name: stringify!($name), expected: <$ty as ParamField>::TYPE })?;
                    Ok(())
                },
            },)+];
        }
    };
}

// The defaults suit a Go2-class robot (about 0.3 m nominal body height): crouch at most 0.25 m,
// never pitch more than 0.3 rad either way. Descriptions are one line each (they become YAML
// comments, docs/node.md's table and `ros2 param describe`).
control_params! {
    /// Commands go out at this rate (Hz, 1..1000), and at once after each new decision.
    control_rate_hz: f64 = 10.0;
    /// Stop when no fresh camera frame came for this long (s, 0..10), on ROS time or on the steady clock, whichever is longer.
    image_timeout_s: f64 = 0.5;
    /// Stop when the decision being followed was made on a frame older than this (s, 0..10): inference hung or fell behind.
    max_decision_age_s: f64 = 1.0;
    /// A frame whose header.stamp is further than this from ROS time, behind or ahead, is not fresh (s, 0..10; 0 = no check).
    max_frame_latency_s: f64 = 0.5;
    /// A frame repeating the previous frame's header.stamp does not count as fresh (zero stamps always count).
    require_new_stamps: bool = true;
    /// Stop unless a deadman heartbeat (std_msgs/Bool true on `deadman`) came within this (s, 0..10; 0 = no deadman).
    deadman_timeout_s: f64 = 0.0;
    /// After a stop with nothing to follow (disabled, e-stop, no instruction, terminated), zero commands go out this long, then none (s, 0..10).
    idle_settle_s: f64 = 0.5;
    /// Lowest forward velocity sent (m/s, <= 0).
    min_linear_x: f64 = -0.5;
    /// Highest forward velocity sent (m/s, >= 0).
    max_linear_x: f64 = 1.0;
    /// Largest lateral speed sent, either side (m/s).
    max_linear_y: f64 = 0.5;
    /// Largest yaw rate sent, either way (rad/s).
    max_angular_z: f64 = 1.0;
    /// Largest change of linear.x per second (m/s^2); stops are immediate, not ramped.
    max_accel_x: f64 = 1.0;
    /// Largest change of linear.y per second (m/s^2).
    max_accel_y: f64 = 1.0;
    /// Largest change of angular.z per second (rad/s^2).
    max_accel_z: f64 = 2.0;
    /// Lowest gait body_height sent (m, offset from nominal; negative = crouch).
    min_body_height: f64 = -0.25;
    /// Highest gait body_height sent (m).
    max_body_height: f64 = 0.05;
    /// Largest change of body_height per second (m/s).
    max_body_height_rate: f64 = 0.5;
    /// Lowest gait step_frequency sent (Hz).
    min_step_frequency: f64 = 2.0;
    /// Highest gait step_frequency sent (Hz).
    max_step_frequency: f64 = 4.0;
    /// Largest change of step_frequency per second (Hz/s).
    max_step_frequency_rate: f64 = 2.0;
    /// Largest change of each gait phase offset per second (cycles/s; offsets stay in 0..1).
    max_phase_offset_rate: f64 = 2.0;
    /// Lowest gait footswing_height sent (m).
    min_footswing_height: f64 = 0.05;
    /// Highest gait footswing_height sent (m).
    max_footswing_height: f64 = 0.15;
    /// Largest change of footswing_height per second (m/s).
    max_footswing_height_rate: f64 = 0.2;
    /// Lowest gait pitch sent (rad; REP 103, positive = nose down).
    min_pitch: f64 = -0.3;
    /// Highest gait pitch sent (rad).
    max_pitch: f64 = 0.3;
    /// Largest change of pitch per second (rad/s).
    max_pitch_rate: f64 = 0.5;
    /// Lowest gait stance_width sent (m).
    min_stance_width: f64 = 0.2;
    /// Highest gait stance_width sent (m).
    max_stance_width: f64 = 0.4;
    /// Largest change of stance_width per second (m/s).
    max_stance_width_rate: f64 = 0.2;
}

impl ControlParams {
    pub fn spec(name: &str) -> Option<&'static ParamSpec> {
        Self::SPECS.iter().find(|s| s.name == name)
    }

    /// The controller settings; `ControlConfig::validate` (run by `Controller::new`) checks them.
    pub fn to_config(&self) -> ControlConfig {
        let f = |v: f64| v as f32;
        let gait = |min: f64, max: f64, rate: f64| GaitLimit { min: f(min), max: f(max), max_rate: f(rate) };
        ControlConfig {
            control_rate_hz: self.control_rate_hz,
            image_timeout_s: self.image_timeout_s,
            max_decision_age_s: self.max_decision_age_s,
            max_frame_latency_s: self.max_frame_latency_s,
            deadman_timeout_s: self.deadman_timeout_s,
            idle_settle_s: self.idle_settle_s,
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
