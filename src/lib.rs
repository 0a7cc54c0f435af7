//! `moe_vla`: a mixture-of-experts vision-language-action Q-network for quadrupeds.
//!
//! Layers (dependencies point downward): `policy` (image + text -> command) over `action` (the
//! discretised action space) and `model` (pure candle).

pub mod action;
pub mod bench;
pub mod model;
pub mod policy;
