//! `moe_vla`: a mixture-of-experts vision-language-action Q-network for quadrupeds.
//!
//! Layers (dependencies point downward): `ros` (r2r adapter, feature `ros`) over `control` (the
//! safety-checked command at each control tick) over `policy` (image + text -> command) over
//! `action` (the discretised action space) and `model` (pure candle).

pub mod action;
pub mod bench;
pub mod control;
pub mod model;
pub mod policy;
#[cfg(feature = "ros")]
pub mod ros;
