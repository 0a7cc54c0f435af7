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

/// The name the relative topic `name` resolves to for node `node_name` in `namespace`, under the
/// remapping rules of a command line (`-r [node:]from:=to` or `--remap`, inside `--ros-args` ...
/// `--` sections, as `ros2 run` and launch files pass them). As in rcl, the first matching rule
/// wins, and a relative result is taken under the namespace.
pub fn resolve(args: &[String], node_name: &str, namespace: &str, name: &str) -> String {
    let namespace = namespace.trim_end_matches('/');
    let absolute = format!("{namespace}/{name}");
    let node_prefix = format!("{node_name}:");
    let mut in_ros_args = false;
    let mut rules = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--ros-args" => in_ros_args = true,
            "--" => in_ros_args = false,
            "-r" | "--remap" if in_ros_args => rules.extend(words.next()),
            _ => {}
        }
    }
    let target = rules
        .into_iter()
        .filter_map(|rule| rule.split_once(":="))
        .find_map(|(from, to)| {
            let from = from.strip_prefix(&node_prefix).unwrap_or(from);
            (from == name || from == absolute).then(|| to.to_owned())
        })
        .unwrap_or_else(|| name.to_owned());
    if target.starts_with('/') {
        target
    } else {
        format!("{namespace}/{target}")
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_topic_resolves_under_the_namespace_and_the_first_matching_rule() {
        let node = "moe_vla_node";
        assert_eq!(resolve(&args("prog"), node, "/", "instruction"), "/instruction");
        assert_eq!(resolve(&args("prog"), node, "/robot1", "instruction"), "/robot1/instruction");
        let two = args("prog --ros-args -r instruction:=/a -r instruction:=/b");
        assert_eq!(resolve(&two, node, "/", "instruction"), "/a", "rcl applies the first matching rule");
        let rules = args("prog --ros-args -r cmd_vel:=/x --remap other_node:instruction:=/c -r moe_vla_node:instruction:=say");
        assert_eq!(resolve(&rules, node, "/robot1", "instruction"), "/robot1/say", "relative targets take the namespace");
        let absolute = args("prog --ros-args -r /robot1/instruction:=/d");
        assert_eq!(resolve(&absolute, node, "/robot1", "instruction"), "/d");
        let outside = args("prog -r instruction:=/e --ros-args -p x:=1 -- -r instruction:=/f");
        assert_eq!(resolve(&outside, node, "/", "instruction"), "/instruction", "rules outside --ros-args are the program's");
    }
}
