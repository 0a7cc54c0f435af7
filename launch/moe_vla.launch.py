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
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="",
                              description="Model folder (default: the parameter file's, else the installed default model)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("moe_vla"), "config", "params.yaml"]),
                              description="Parameter file (see config/params.yaml)"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: use /clock"),
        DeclareLaunchArgument("use_stamped", default_value="",
                              description="true: publish TwistStamped instead of Twist"),
        DeclareLaunchArgument("managed", default_value="",
                              description="true: wait for a lifecycle manager (nav2_lifecycle_manager) to configure and activate"),
        DeclareLaunchArgument("respawn", default_value="false",
                              description="true: restart the node if it exits (it comes back disarmed)"),
        DeclareLaunchArgument("image_topic", default_value="camera/image_raw",
                              description="Camera topic (the compressed one is IMAGE_TOPIC/compressed)"),
        DeclareLaunchArgument("instruction_topic", default_value="instruction",
                              description="Instruction topic (std_msgs/String)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value="cmd_vel",
                              description="Velocity command topic"),
        DeclareLaunchArgument("gait_topic", default_value="gait_command",
                              description="Gait command topic (moe_vla_msgs/GaitCommand)"),
        DeclareLaunchArgument("decision_topic", default_value="~/decision",
                              description="Decision report topic (moe_vla_msgs/VlaDecision)"),
        DeclareLaunchArgument("estop_topic", default_value="estop",
                              description="E-stop input (std_msgs/Bool, latched: true = stop and hold)"),
        DeclareLaunchArgument("deadman_topic", default_value="deadman",
                              description="Deadman heartbeat (std_msgs/Bool; see deadman_timeout_s)"),
        OpaqueFunction(function=launch_node),
    ])
