//! The node's parameters: declared through r2r (so `ros2 param list/get/set` and `--params-file`
//! work), turned into the controller's settings at start-up, and changed at run time through
//! `LiveParams`. Each is defined once: the node's own in `NodeSettings`, the controller's in
//! `control/params.rs`; `moe_vla_node --print-params yaml|markdown` writes config/params.yaml and
//! the parameter table of docs/node.md from them.

use std::path::PathBuf;

use candle_core::Device;
use futures::channel::mpsc::UnboundedSender;
use r2r::indexmap::IndexMap;
use r2r::{Parameter, ParameterValue, RosParams};

use crate::control::{ControlConfig, ControlParams, ParamSpec, ParamValue};
use crate::model::parse_device;
use crate::policy::tokenize::accept_instruction;

/// The node's own parameters (model, inputs and outputs, arming). The controller's are
/// `ControlParams`, defined in `control/params.rs`. Field docs are the descriptions `ros2 param
/// describe` shows, the YAML's comments and docs/node.md's table: one line each.
#[derive(RosParams, Debug, Clone)]
pub struct NodeSettings {
    /// Model folder (config.json, model.safetensors, and tokenizer.json for a word-level model); empty = share/moe_vla/models/default. Read-only.
    pub model_dir: String,
    /// "raw": sensor_msgs/Image on camera/image_raw; "compressed": sensor_msgs/CompressedImage on camera/image_raw/compressed. Read-only.
    pub image_input: String,
    /// Publish geometry_msgs/TwistStamped instead of Twist on cmd_vel (twist_mux and Nav2 on Jazzy and later expect stamped). Read-only.
    pub use_stamped: bool,
    /// Publish gait_command; false for a velocity-only locomotion controller (most are). Read-only.
    pub publish_gait: bool,
    /// header.frame_id of TwistStamped and GaitCommand. Read-only.
    pub frame_id: String,
    /// CPU threads for inference; 0 = every core. Read-only.
    pub inference_threads: i64,
    /// Where the network runs: "cpu", or "cuda:N" (a build with the cuda feature). Read-only.
    pub device: String,
    /// Instruction to follow from start-up; empty = wait for one on the instruction topic.
    pub instruction: String,
    /// false: a lifecycle node of its own (configure, activate at start-up); true: wait for a lifecycle manager. Read-only.
    pub managed: bool,
    /// Unmanaged only: arm at start-up. Keep false on a robot: it then moves only after ~/enable. Read-only.
    pub start_enabled: bool,
    /// Use /clock (e.g. from `ros2 bag play --clock`) as ROS time; the watchdogs also run on a steady clock. Read-only.
    pub use_sim_time: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            model_dir: String::new(),
            image_input: "raw".into(),
            use_stamped: false,
            publish_gait: true,
            frame_id: "base_link".into(),
            inference_threads: 0,
            device: "cpu".into(),
            instruction: String::new(),
            managed: false,
            start_enabled: false,
            use_sim_time: false,
        }
    }
}

/// Every parameter `moe_vla_node` declares: its own, then the controller's.
#[derive(Debug, Clone, Default)]
pub struct NodeParams {
    pub node: NodeSettings,
    pub control: ControlParams,
}

/// An r2r parameter value of a controller parameter, through r2r's own conversions (so `ros2
/// param set` and `--params-file` behave as for any derived field).
fn control_value(spec: &ParamSpec, params: &ControlParams) -> r2r::Result<ParameterValue> {
    match (spec.get)(params) {
        ParamValue::Float(mut v) => v.get_parameter(""),
        ParamValue::Bool(mut v) => v.get_parameter(""),
    }
}

fn set_control_value(spec: &ParamSpec, params: &mut ControlParams, value: &ParameterValue) -> r2r::Result<()> {
    let converted = match (spec.get)(params) {
        ParamValue::Float(mut v) => v.set_parameter("", value).map(|()| ParamValue::Float(v)),
        ParamValue::Bool(mut v) => v.set_parameter("", value).map(|()| ParamValue::Bool(v)),
    }
    .map_err(|e| e.update_param_name(spec.name))?;
    (spec.set)(params, converted).map_err(|e| r2r::Error::ParameterValueConv { name: spec.name.to_owned(), msg: e.to_string() })
}

impl RosParams for NodeParams {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<Parameter>,
        params: &mut IndexMap<String, Parameter>,
    ) -> r2r::Result<()> {
        self.node.register_parameters(prefix, param, params)?;
        for spec in ControlParams::SPECS {
            let mut value = (spec.get)(&self.control);
            let description = Parameter { value: ParameterValue::NotSet, description: spec.description };
            // A leaf of r2r's own type takes the command line's value (type-checked) and declares it.
            match &mut value {
                ParamValue::Float(v) => v.register_parameters(spec.name, Some(description), params)?,
                ParamValue::Bool(v) => v.register_parameters(spec.name, Some(description), params)?,
            }
            (spec.set)(&mut self.control, value)
                .map_err(|e| r2r::Error::ParameterValueConv { name: spec.name.to_owned(), msg: e.to_string() })?;
        }
        Ok(())
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        match ControlParams::spec(name) {
            Some(spec) => control_value(spec, &self.control),
            None => self.node.get_parameter(name),
        }
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        match ControlParams::spec(name) {
            Some(spec) => set_control_value(spec, &mut self.control, value),
            None => self.node.set_parameter(name, value),
        }
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.clone().set_parameter(name, value)
    }
}

/// A declared parameter: name, default value (as YAML writes it), description.
pub struct Declared {
    pub name: String,
    pub default: String,
    pub description: &'static str,
}

/// Parameters the node reads once, at start-up (the model, the inputs and outputs it creates, its
/// clock, how it is armed); a change needs a restart. `start_enabled` is among them: arming at run
/// time goes through ~/enable or the lifecycle only.
pub const START_UP_ONLY: [&str; 10] = [
    "model_dir",
    "image_input",
    "inference_threads",
    "device",
    "use_stamped",
    "publish_gait",
    "frame_id",
    "managed",
    "start_enabled",
    "use_sim_time",
];

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

/// The parameters a `RosParams` struct declares, with their defaults, in declaration order.
pub fn declared_parameters<P: RosParams + Default>() -> Vec<Declared> {
    let mut map = IndexMap::new();
    P::default().register_parameters("", Some(Parameter::empty()), &mut map).expect("defaults have the declared types");
    map.into_iter().map(|(name, p)| Declared { name, default: yaml_value(&p.value), description: p.description }).collect()
}

/// `config/params.yaml` as generated from the declarations: every parameter at its default, each
/// with its description as a comment.
pub fn params_yaml() -> String {
    let mut out = String::from(
        "# moe_vla_node parameters, generated by `moe_vla_node --print-params yaml` from their definitions\n\
         # (src/ros/params.rs, src/control/params.rs): every parameter at its default. Pass with:\n\
         #   moe_vla_node --ros-args --params-file config/params.yaml\n\
         #   ros2 launch moe_vla moe_vla.launch.py params_file:=/path/to/params.yaml\n\
         # \"/**\" applies to the node under any name and namespace.\n/**:\n  ros__parameters:\n",
    );
    for p in NodeParams::declared() {
        for line in wrap(p.description, 96) {
            out.push_str(&format!("    # {line}\n"));
        }
        out.push_str(&format!("    {}: {}\n", p.name, p.default));
    }
    out
}

/// The parameter table of docs/node.md as generated from the declarations.
pub fn params_markdown() -> String {
    let mut out = String::from("| parameter | default | description |\n|---|---|---|\n");
    for p in NodeParams::declared() {
        out.push_str(&format!("| `{}` | `{}` | {} |\n", p.name, p.default, p.description.replace('|', "\\|")));
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// A parameter value as YAML writes it.
fn yaml_value(value: &ParameterValue) -> String {
    match value {
        ParameterValue::Bool(b) => b.to_string(),
        ParameterValue::Integer(i) => i.to_string(),
        // Always with a decimal point, so that ROS reads a double back.
        ParameterValue::Double(d) if d.fract() == 0.0 && d.is_finite() => format!("{d:.1}"),
        ParameterValue::Double(d) => d.to_string(),
        ParameterValue::String(s) => format!("{s:?}"),
        other => format!("{other:?}"),
    }
}

impl NodeParams {
    /// Every declared parameter with its default, in declaration order.
    pub fn declared() -> Vec<Declared> {
        declared_parameters::<Self>()
    }

    pub fn image_input(&self) -> Result<ImageInput, ParamError> {
        match self.node.image_input.as_str() {
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
        if changed == "instruction" && !self.node.instruction.trim().is_empty() {
            accept_instruction(&self.node.instruction).map_err(|e| format!("instruction: {e}"))?;
        }
        Ok(())
    }

    pub fn control_config(&self) -> ControlConfig {
        self.control.to_config()
    }

    /// `device`: the CPU, or a CUDA GPU when the build has the `cuda` feature.
    pub fn device(&self) -> Result<Device, ParamError> {
        parse_device(&self.node.device).map_err(|e| ParamError::Invalid { name: "device", reason: e.to_string() })
    }

    pub fn inference_threads(&self) -> Result<Option<usize>, ParamError> {
        match self.node.inference_threads {
            0 => Ok(None),
            n if n > 0 => Ok(Some(n as usize)),
            n => Err(ParamError::Invalid { name: "inference_threads", reason: format!("{n} is negative") }),
        }
    }

    /// `model_dir`, or the default model installed with the package.
    pub fn model_dir(&self) -> Result<PathBuf, ParamError> {
        if !self.node.model_dir.is_empty() {
            return Ok(PathBuf::from(&self.node.model_dir));
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
