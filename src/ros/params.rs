//! The node's parameters: declared through r2r (so `ros2 param list/get` and `--params-file` work),
//! turned into the controller's settings at start-up.

use std::path::PathBuf;

use r2r::indexmap::IndexMap;
use r2r::{Parameter, RosParams};

use crate::control::{AxisLimit, ControlConfig};

/// Every parameter `moe_vla_node` declares, with its default. Field docs are the descriptions
/// `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct NodeParams {
    /// Model folder (config.json, model.safetensors, tokenizer.json); empty = share/moe_vla/models/default.
    pub model_dir: String,
    /// "raw" subscribes to sensor_msgs/Image on camera/image_raw, "compressed" to sensor_msgs/CompressedImage on camera/image_raw/compressed.
    pub image_input: String,
    /// Publish geometry_msgs/TwistStamped instead of Twist on cmd_vel.
    pub use_stamped: bool,
    /// header.frame_id of TwistStamped and GaitCommand.
    pub frame_id: String,
    /// Commands go out at this rate (Hz), and at once after each new decision.
    pub control_rate_hz: f64,
    /// Stop when the newest camera frame is older than this (s).
    pub image_timeout_s: f64,
    /// Lowest forward velocity sent (m/s, <= 0).
    pub min_linear_x: f64,
    /// Highest forward velocity sent (m/s).
    pub max_linear_x: f64,
    /// Largest lateral speed sent, either side (m/s).
    pub max_linear_y: f64,
    /// Largest yaw rate sent, either way (rad/s).
    pub max_angular_z: f64,
    /// Largest change of linear.x per second (m/s^2).
    pub max_accel_x: f64,
    /// Largest change of linear.y per second (m/s^2).
    pub max_accel_y: f64,
    /// Largest change of angular.z per second (rad/s^2).
    pub max_accel_z: f64,
    /// CPU threads for inference; 0 = every core.
    pub inference_threads: i64,
    /// Instruction to follow from start-up; empty = wait for one on the instruction topic.
    pub instruction: String,
    /// Start enabled; when false, ~/enable must be called before the robot moves.
    pub start_enabled: bool,
    /// Use /clock (e.g. from `ros2 bag play --clock`) as the node's time.
    pub use_sim_time: bool,
}

impl Default for NodeParams {
    fn default() -> Self {
        let c = ControlConfig::default();
        Self {
            model_dir: String::new(),
            image_input: "raw".into(),
            use_stamped: false,
            frame_id: "base_link".into(),
            control_rate_hz: c.control_rate_hz,
            image_timeout_s: c.image_timeout_s,
            min_linear_x: c.x_vel.min.into(),
            max_linear_x: c.x_vel.max.into(),
            max_linear_y: c.y_vel.max.into(),
            max_angular_z: c.yaw_vel.max.into(),
            max_accel_x: c.x_vel.max_accel.into(),
            max_accel_y: c.y_vel.max_accel.into(),
            max_accel_z: c.yaw_vel.max_accel.into(),
            inference_threads: 0,
            instruction: String::new(),
            start_enabled: true,
            use_sim_time: false,
        }
    }
}

/// Which camera topic and type the node reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageInput {
    Raw,
    Compressed,
}

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("no model_dir given and no share/moe_vla/models/default on AMENT_PREFIX_PATH")]
    NoDefaultModel,
}

/// Names and descriptions of the parameters a `RosParams` struct declares, in declaration order.
pub fn declared_parameters<P: RosParams + Default>() -> Vec<(String, &'static str)> {
    let mut map = IndexMap::new();
    P::default().register_parameters("", Some(Parameter::empty()), &mut map).expect("defaults have the declared types");
    map.into_iter().map(|(name, p)| (name, p.description)).collect()
}

impl NodeParams {
    /// Names and descriptions of every declared parameter, in declaration order.
    pub fn declared() -> Vec<(String, &'static str)> {
        declared_parameters::<Self>()
    }

    pub fn image_input(&self) -> Result<ImageInput, ParamError> {
        match self.image_input.as_str() {
            "raw" => Ok(ImageInput::Raw),
            "compressed" => Ok(ImageInput::Compressed),
            other => Err(ParamError::Invalid {
                name: "image_input",
                reason: format!("'{other}' is neither \"raw\" nor \"compressed\""),
            }),
        }
    }

    pub fn control_config(&self) -> ControlConfig {
        let f = |v: f64| v as f32;
        ControlConfig {
            control_rate_hz: self.control_rate_hz,
            image_timeout_s: self.image_timeout_s,
            x_vel: AxisLimit { min: f(self.min_linear_x), max: f(self.max_linear_x), max_accel: f(self.max_accel_x) },
            y_vel: AxisLimit::symmetric(f(self.max_linear_y), f(self.max_accel_y)),
            yaw_vel: AxisLimit::symmetric(f(self.max_angular_z), f(self.max_accel_z)),
        }
    }

    pub fn inference_threads(&self) -> Result<Option<usize>, ParamError> {
        match self.inference_threads {
            0 => Ok(None),
            n if n > 0 => Ok(Some(n as usize)),
            n => Err(ParamError::Invalid { name: "inference_threads", reason: format!("{n} is negative") }),
        }
    }

    /// `model_dir`, or the default model installed with the package.
    pub fn model_dir(&self) -> Result<PathBuf, ParamError> {
        if !self.model_dir.is_empty() {
            return Ok(PathBuf::from(&self.model_dir));
        }
        std::env::var("AMENT_PREFIX_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(|prefix| PathBuf::from(prefix).join("share/moe_vla/models/default"))
            .find(|dir| dir.join(crate::policy::CONFIG_FILE).is_file())
            .ok_or(ParamError::NoDefaultModel)
    }
}
