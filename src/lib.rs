//! `moe_vla`: a mixture-of-experts vision-language-action Q-network for quadrupeds.
//!
//! Layers (dependencies point downward): `ros` (r2r adapter, feature `ros`), `bag` (rosbag2 MCAP
//! files), `replay` (bags through the controller), `sim` (the task world, collection and
//! evaluation) and `train` (offline Q-learning and behaviour cloning from bags) over `control` (the
//! safety-checked command at each control tick) over `policy` (image + text -> command) over
//! `action` (the discretised action space) and `model` (pure candle). `topics` names the topics for
//! every layer; `fixtures` holds what
//! `moe_vla init`, `moe_vla bench` and `cargo bench` share.

pub mod action;
pub mod bag;
pub mod control;
pub mod fixtures;
pub mod model;
pub mod policy;
pub mod replay;
#[cfg(feature = "ros")]
pub mod ros;
pub mod sim;
pub mod topics;
pub mod train;
