//! The names of the node's topics, in one place. The node subscribes and publishes the relative
//! names (so namespaces and remaps apply); bags recorded from it, collection, training and replay
//! use the absolute names a node in the root namespace gets.

/// A topic as the node names it and as a bag of a node in the root namespace records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub relative: &'static str,
    pub absolute: &'static str,
}

macro_rules! topic {
    ($relative:literal) => {
        Topic { relative: $relative, absolute: concat!("/", $relative) }
    };
}

/// Camera frames, `sensor_msgs/Image`.
pub const CAMERA: Topic = topic!("camera/image_raw");
/// Camera frames, `sensor_msgs/CompressedImage` (image_transport's compressed name).
pub const CAMERA_COMPRESSED: Topic = topic!("camera/image_raw/compressed");
/// The instruction, `std_msgs/String`.
pub const INSTRUCTION: Topic = topic!("instruction");
/// Velocity commands, `geometry_msgs/Twist` or `TwistStamped`.
pub const CMD_VEL: Topic = topic!("cmd_vel");
/// Gait commands, `moe_vla_msgs/GaitCommand`.
pub const GAIT_COMMAND: Topic = topic!("gait_command");
/// Every decision, `moe_vla_msgs/VlaDecision`: private to the node.
pub const DECISION: Topic = Topic { relative: "~/decision", absolute: "/moe_vla_node/decision" };
/// Collected episodes' outcomes, `moe_vla_msgs/EpisodeOutcome` (bags only).
pub const EPISODE_OUTCOME: &str = "/moe_vla/episode";
/// One header per frame the controller received during a replay (replay output bags only).
pub const REPLAY_FRAMES: &str = "/moe_vla/replay/frames";
