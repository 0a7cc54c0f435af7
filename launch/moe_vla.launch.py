"""Launches moe_vla_node with a parameter file and every topic remappable.

    ros2 launch moe_vla moe_vla.launch.py image_topic:=/front_camera/image_raw \
        cmd_vel_topic:=/cmd_vel_vla use_stamped:=true namespace:=robot1 estop_topic:=/estop

The node comes up disarmed: it moves only after `~/enable` (or, with managed:=true, after a
lifecycle manager activates it). model_dir, use_sim_time, use_stamped and managed override the
parameter file only when given. respawn:=true restarts the node if it dies (it comes back
disarmed; managed, it comes back unconfigured for the lifecycle manager to bring up).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

TRUE = ("true", "1", "yes")


def launch_node(context):
    def given(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    if given("model_dir"):
        overrides["model_dir"] = given("model_dir")
    for flag in ("use_sim_time", "use_stamped", "managed"):
        if given(flag):
            overrides[flag] = given(flag).lower() in TRUE
    image_topic = given("image_topic")
    return [
        Node(
            package="moe_vla",
            executable="moe_vla_node",
            name="moe_vla_node",
            namespace=given("namespace"),
            parameters=[given("params_file"), overrides],
            remappings=[
                ("camera/image_raw", image_topic),
                ("camera/image_raw/compressed", image_topic + "/compressed"),
                ("instruction", given("instruction_topic")),
                ("cmd_vel", given("cmd_vel_topic")),
                ("gait_command", given("gait_topic")),
                ("~/decision", given("decision_topic")),
                ("estop", given("estop_topic")),
                ("deadman", given("deadman_topic")),
            ],
            respawn=given("respawn").lower() in TRUE,
            respawn_delay=2.0,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    def argument(name, default, description):
        return DeclareLaunchArgument(name, default_value=default, description=description)

    return LaunchDescription([
        argument("model_dir", "", "Model folder (default: the parameter file's, else the installed default model)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("moe_vla"), "config", "params.yaml"]),
                              description="Parameter file (see config/params.yaml)"),
        argument("namespace", "", "Namespace of the node and its topics"),
        argument("use_sim_time", "", "true: use /clock"),
        argument("use_stamped", "", "true: publish TwistStamped instead of Twist"),
        argument("managed", "", "true: wait for a lifecycle manager (nav2_lifecycle_manager) to configure and activate"),
        argument("respawn", "false", "true: restart the node if it exits (it comes back disarmed)"),
        argument("image_topic", "camera/image_raw", "Camera topic (the compressed one is IMAGE_TOPIC/compressed)"),
        argument("instruction_topic", "instruction", "Instruction topic (std_msgs/String)"),
        argument("cmd_vel_topic", "cmd_vel", "Velocity command topic"),
        argument("gait_topic", "gait_command", "Gait command topic (moe_vla_msgs/GaitCommand)"),
        argument("decision_topic", "~/decision", "Decision report topic (moe_vla_msgs/VlaDecision)"),
        argument("estop_topic", "estop", "E-stop input (std_msgs/Bool, latched: true = stop and hold)"),
        argument("deadman_topic", "deadman", "Deadman heartbeat (std_msgs/Bool; see deadman_timeout_s)"),
        OpaqueFunction(function=launch_node),
    ])
