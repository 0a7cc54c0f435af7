//! `moe_vla`: a mixture-of-experts vision-language-action Q-network for quadrupeds.
//!
//! Layers (dependencies point downward): `ros` (r2r adapter, feature `ros`), `bag` (rosbag2 MCAP
//! files) and `replay` (bags through the controller) over `control` (the safety-checked command at
//! each control tick) over `policy` (image + text -> command) over `action` (the discretised action
//! space) and `model` (pure candle).

pub mod action;
pub mod bag;
pub mod bench;
pub mod control;
pub mod model;
pub mod policy;
pub mod replay;
#[cfg(feature = "ros")]
pub mod ros;
pub mod sim;
pub mod train;
