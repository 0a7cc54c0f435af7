"""The policy and the task world together: moe_vla_node drives moe_vla_sim_node's simulated
quadruped over ROS 2, and the world reports each episode's outcome on /moe_vla/episode.

    ros2 launch moe_vla sim.launch.py episodes:=12 family:=crawl seed:=3
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def launch_nodes(context):
    def given(name):
        return LaunchConfiguration(name).perform(context)

    # The simulated robot needs no operator: armed at start (a real robot keeps start_enabled false).
    policy = {"start_enabled": True, **({"model_dir": given("model_dir")} if given("model_dir") else {})}
    world = Node(
        package="moe_vla",
        executable="moe_vla_sim_node",
        name="moe_vla_sim_node",
        parameters=[{
            "episodes": int(given("episodes")),
            "family": given("family"),
            "seed": int(given("seed")),
            "held_out": given("held_out").lower() in ("true", "1", "yes"),
            "world": given("world"),
        }],
        output="screen",
        emulate_tty=True,
    )
    return [
        Node(package="moe_vla", executable="moe_vla_node", name="moe_vla_node", parameters=[policy],
             output="screen", emulate_tty=True),
        world,
        # The run ends when the world has played its episodes.
        RegisterEventHandler(OnProcessExit(target_action=world, on_exit=[EmitEvent(event=Shutdown())])),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("model_dir", default_value="", description="Model folder (default: the installed default model)"),
        DeclareLaunchArgument("episodes", default_value="6", description="Episodes to play; 0 = until stopped"),
        DeclareLaunchArgument("family", default_value="all",
                              description="go_to, distinguish, go_avoid, go_through, crawl, stop, or all (cycle)"),
        DeclareLaunchArgument("seed", default_value="0", description="Seed of the scenes"),
        DeclareLaunchArgument("held_out", default_value="false", description="true: held-out instruction paraphrases"),
        DeclareLaunchArgument("world", default_value="kinematic",
                              description="kinematic, or physics (a Go2 in MuJoCo; a build with the cargo feature physics)"),
        OpaqueFunction(function=launch_nodes),
    ])
