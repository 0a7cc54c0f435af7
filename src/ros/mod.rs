//! The ROS 2 adapter (r2r): the only module that touches ROS.

pub mod convert;
pub mod lifecycle;
pub mod logging;
pub mod node;
pub mod params;
mod qos_check;
pub mod sim_node;
mod streams;

pub use node::{run, NodeError, NODE_NAME};
pub use params::NodeParams;
pub use sim_node::{SimParams, SIM_NODE_NAME};
