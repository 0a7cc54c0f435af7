//! The node's parameters: declared through r2r (so `ros2 param list/get/set` and `--params-file`
//! work), turned into the controller's settings at start-up, and changed at run time through
//! `LiveParams`.

use std::path::PathBuf;

use candle_core::Device;
use futures::channel::mpsc::UnboundedSender;
use r2r::indexmap::IndexMap;
use r2r::{Parameter, ParameterValue, RosParams};

use crate::control::{ControlConfig, ControlParams};
use crate::model::parse_device;
use crate::policy::tokenize::accept_instruction;

/// Every parameter `moe_vla_node` declares, with its default. Field docs are the descriptions
/// `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct NodeParams {
    /// Model folder (config.json, model.safetensors, and tokenizer.json for a word-level model); empty = share/moe_vla/models/default.
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
    /// Stop when the decision being followed was made on a frame older than this (s): inference hung or fell behind.
    pub max_decision_age_s: f64,
    /// A frame repeating the previous frame's header.stamp does not count as fresh for image_timeout_s (zero stamps always count).
    pub require_new_stamps: bool,
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
    /// Lowest gait body_height sent (m, offset from nominal; negative = crouch).
    pub min_body_height: f64,
    /// Highest gait body_height sent (m).
    pub max_body_height: f64,
    /// Largest change of body_height per second (m/s).
    pub max_body_height_rate: f64,
    /// Lowest gait step_frequency sent (Hz).
    pub min_step_frequency: f64,
    /// Highest gait step_frequency sent (Hz).
    pub max_step_frequency: f64,
    /// Largest change of step_frequency per second (Hz/s).
    pub max_step_frequency_rate: f64,
    /// Largest change of each gait phase offset per second (cycles/s; offsets stay in 0..1).
    pub max_phase_offset_rate: f64,
    /// Lowest gait footswing_height sent (m).
    pub min_footswing_height: f64,
    /// Highest gait footswing_height sent (m).
    pub max_footswing_height: f64,
    /// Largest change of footswing_height per second (m/s).
    pub max_footswing_height_rate: f64,
    /// Lowest gait pitch sent (rad; REP 103, positive = nose down).
    pub min_pitch: f64,
    /// Highest gait pitch sent (rad).
    pub max_pitch: f64,
    /// Largest change of pitch per second (rad/s).
    pub max_pitch_rate: f64,
    /// Lowest gait stance_width sent (m).
    pub min_stance_width: f64,
    /// Highest gait stance_width sent (m).
    pub max_stance_width: f64,
    /// Largest change of stance_width per second (m/s).
    pub max_stance_width_rate: f64,
    /// CPU threads for inference; 0 = every core.
    pub inference_threads: i64,
    /// Where the network runs: "cpu", or "cuda:N" (a build with the cuda feature).
    pub device: String,
    /// Instruction to follow from start-up; empty = wait for one on the instruction topic.
    pub instruction: String,
    /// Start enabled; when false, ~/enable must be called before the robot moves.
    pub start_enabled: bool,
    /// Use /clock (e.g. from `ros2 bag play --clock`) as the node's time.
    pub use_sim_time: bool,
}

impl Default for NodeParams {
    fn default() -> Self {
        let c = ControlParams::default();
        Self {
            model_dir: String::new(),
            image_input: "raw".into(),
            use_stamped: false,
            frame_id: "base_link".into(),
            control_rate_hz: c.control_rate_hz,
            image_timeout_s: c.image_timeout_s,
            max_decision_age_s: c.max_decision_age_s,
            require_new_stamps: c.require_new_stamps,
            min_linear_x: c.min_linear_x,
            max_linear_x: c.max_linear_x,
            max_linear_y: c.max_linear_y,
            max_angular_z: c.max_angular_z,
            max_accel_x: c.max_accel_x,
            max_accel_y: c.max_accel_y,
            max_accel_z: c.max_accel_z,
            min_body_height: c.min_body_height,
            max_body_height: c.max_body_height,
            max_body_height_rate: c.max_body_height_rate,
            min_step_frequency: c.min_step_frequency,
            max_step_frequency: c.max_step_frequency,
            max_step_frequency_rate: c.max_step_frequency_rate,
            max_phase_offset_rate: c.max_phase_offset_rate,
            min_footswing_height: c.min_footswing_height,
            max_footswing_height: c.max_footswing_height,
            max_footswing_height_rate: c.max_footswing_height_rate,
            min_pitch: c.min_pitch,
            max_pitch: c.max_pitch,
            max_pitch_rate: c.max_pitch_rate,
            min_stance_width: c.min_stance_width,
            max_stance_width: c.max_stance_width,
            max_stance_width_rate: c.max_stance_width_rate,
            inference_threads: 0,
            device: "cpu".into(),
            instruction: String::new(),
            start_enabled: true,
            use_sim_time: false,
        }
    }
}

/// Parameters the node reads once, at start-up (the model, the inputs and outputs it creates, its
/// clock); a change needs a restart.
pub const START_UP_ONLY: [&str; 7] =
    ["model_dir", "image_input", "inference_threads", "device", "use_stamped", "frame_id", "use_sim_time"];

/// The parameters as the parameter services see them while the node runs (`ros2 param set`). A
/// change is checked together with every other parameter before it is taken: a refusal keeps the
/// old value and gives the reason in the `SetParametersResult`. Start-up-only parameters are
/// refused. Each accepted set goes to the control task as the name set and the whole new set; the
/// control task applies it at once (a set of an unchanged value still acts: `start_enabled false`
/// disables again after `~/enable` enabled).
pub struct LiveParams {
    current: NodeParams,
    changes: UnboundedSender<(String, NodeParams)>,
}

impl LiveParams {
    pub fn new(initial: NodeParams, changes: UnboundedSender<(String, NodeParams)>) -> Self {
        Self { current: initial, changes }
    }

    pub fn current(&self) -> &NodeParams {
        &self.current
    }

    /// The parameters with `name` set to `value`, if the node can take them while it runs.
    fn changed(&self, name: &str, value: &ParameterValue) -> r2r::Result<NodeParams> {
        let refuse = |msg: String| r2r::Error::ParameterValueConv { name: name.to_owned(), msg };
        if START_UP_ONLY.contains(&name) {
            return Err(refuse("refused: read only at start-up; restart the node to change it".into()));
        }
        let mut next = self.current.clone();
        next.set_parameter(name, value)?;
        next.runtime_check(name).map_err(|reason| refuse(format!("refused, the old value stays: {reason}")))?;
        Ok(next)
    }
}

impl RosParams for LiveParams {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<Parameter>,
        params: &mut IndexMap<String, Parameter>,
    ) -> r2r::Result<()> {
        self.current.register_parameters(prefix, param, params)
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        self.current.get_parameter(name)
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        let next = self.changed(name, value)?;
        self.current = next.clone();
        // The control task is gone only while the node shuts down.
        let _ = self.changes.unbounded_send((name.to_owned(), next));
        Ok(())
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.changed(name, value).map(|_| ())
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

    /// Whether the node can run with these parameters after `changed` was set: the controller's
    /// settings, and the instruction when that is what changed (a start-up instruction that was
    /// refused must not block every later change).
    fn runtime_check(&self, changed: &str) -> Result<(), String> {
        self.control_config().validate().map_err(|e| e.to_string())?;
        if changed == "instruction" && !self.instruction.trim().is_empty() {
            accept_instruction(&self.instruction).map_err(|e| format!("instruction: {e}"))?;
        }
        Ok(())
    }

    pub fn control_config(&self) -> ControlConfig {
        ControlParams {
            control_rate_hz: self.control_rate_hz,
            image_timeout_s: self.image_timeout_s,
            max_decision_age_s: self.max_decision_age_s,
            require_new_stamps: self.require_new_stamps,
            min_linear_x: self.min_linear_x,
            max_linear_x: self.max_linear_x,
            max_linear_y: self.max_linear_y,
            max_angular_z: self.max_angular_z,
            max_accel_x: self.max_accel_x,
            max_accel_y: self.max_accel_y,
            max_accel_z: self.max_accel_z,
            min_body_height: self.min_body_height,
            max_body_height: self.max_body_height,
            max_body_height_rate: self.max_body_height_rate,
            min_step_frequency: self.min_step_frequency,
            max_step_frequency: self.max_step_frequency,
            max_step_frequency_rate: self.max_step_frequency_rate,
            max_phase_offset_rate: self.max_phase_offset_rate,
            min_footswing_height: self.min_footswing_height,
            max_footswing_height: self.max_footswing_height,
            max_footswing_height_rate: self.max_footswing_height_rate,
            min_pitch: self.min_pitch,
            max_pitch: self.max_pitch,
            max_pitch_rate: self.max_pitch_rate,
            min_stance_width: self.min_stance_width,
            max_stance_width: self.max_stance_width,
            max_stance_width_rate: self.max_stance_width_rate,
        }
        .to_config()
    }

    /// `device`: the CPU, or a CUDA GPU when the build has the `cuda` feature.
    pub fn device(&self) -> Result<Device, ParamError> {
        parse_device(&self.device).map_err(|e| ParamError::Invalid { name: "device", reason: e.to_string() })
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
