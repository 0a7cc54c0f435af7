"""Launches moe_vla_node with a parameter file and remappable camera and cmd_vel topics.

    ros2 launch moe_vla moe_vla.launch.py image_topic:=/front_camera/image_raw \
        cmd_vel_topic:=/cmd_vel_vla use_stamped:=true namespace:=robot1

model_dir, use_sim_time and use_stamped override the parameter file only when given.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def launch_node(context):
    def given(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    if given("model_dir"):
        overrides["model_dir"] = given("model_dir")
    for flag in ("use_sim_time", "use_stamped"):
        if given(flag):
            overrides[flag] = given(flag).lower() in ("true", "1", "yes")
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
                ("cmd_vel", given("cmd_vel_topic")),
            ],
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
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="", description="true: use /clock"),
        DeclareLaunchArgument("use_stamped", default_value="",
                              description="true: publish TwistStamped instead of Twist"),
        DeclareLaunchArgument("image_topic", default_value="camera/image_raw",
                              description="Camera topic (the compressed one is IMAGE_TOPIC/compressed)"),
        DeclareLaunchArgument("cmd_vel_topic", default_value="cmd_vel", description="Velocity command topic"),
        OpaqueFunction(function=launch_node),
    ])
