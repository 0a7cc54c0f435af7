"""moe_vla_sim_node closed-loop with moe_vla_node over real ROS 2: camera and instruction from the
world, commands back, one EpisodeOutcome per episode."""

import ast
import subprocess

from geometry_msgs.msg import Twist
from moe_vla.msg import EpisodeOutcome
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

import peer as p

REASONS = {"reached", "passed", "stayed", "terminated", "collision", "wrong_object", "terminated_early",
           "timeout", "moved"}
SUCCESS = {"reached", "passed", "stayed", "terminated"}


def start_sim(tmp_path, domain_id, **params):
    return p.NodeProcess(tmp_path, domain_id, params, name="sim", binary="moe_vla_sim_node")


def test_world_and_policy_close_the_loop(domain_id, peer, start_node, tmp_path):
    outcomes = "/moe_vla/episode"
    peer.subscribe(outcomes, EpisodeOutcome)
    peer.subscribe("/camera/image_raw", Image, qos_profile_sensor_data)
    peer.subscribe("/cmd_vel", Twist)
    node = start_node()
    # Four times real time keeps the test short; the policy decides well within a step.
    sim = start_sim(tmp_path, domain_id, episodes=2, family="all", seed=5, rate_hz=20.0)
    try:
        p.wait_until(lambda: len(peer.messages(outcomes)) >= 2, 90, "two episode outcomes")
        assert sim.proc.wait(timeout=15) == 0, sim.log()
    finally:
        sim.stop()
    assert node.alive(), node.log()
    results = [m for _, m in peer.messages(outcomes)]
    assert [r.family for r in results] == ["go_to", "distinguish"], "family 'all' cycles in order"
    for r in results:
        assert r.reason in REASONS
        assert r.success == (r.reason in SUCCESS)
        assert r.steps >= 1 and r.instruction
        assert not r.held_out
    frames = [m for _, m in peer.messages("/camera/image_raw")]
    assert frames and all((f.width, f.height, f.encoding) == (64, 64, "rgb8") for f in frames)
    # The node commanded the world: cmd_vel flowed while the episodes ran.
    assert peer.messages("/cmd_vel"), node.log()
    assert "episode 1 (distinguish)" in sim.log()


def test_sim_node_rejects_a_bad_family(domain_id, tmp_path):
    sim = start_sim(tmp_path, domain_id, family="fly")
    code = sim.proc.wait(timeout=30)
    assert code == 1
    assert "family 'fly'" in sim.log()


def test_sim_node_lists_its_parameters():
    assert {"family", "episodes", "seed", "held_out", "image_size", "rate_hz"} <= declared("moe_vla_sim_node")


def declared(binary: str) -> set:
    out = subprocess.run([str(p.installed(binary)), "--list-params"], check=True, capture_output=True,
                         text=True).stdout
    return {line.split("\t")[0] for line in out.splitlines()}


def test_sim_launch_file_sets_only_declared_parameters():
    tree = ast.parse((p.ROOT / "launch/sim.launch.py").read_text())
    keys = {k.value for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if isinstance(k, ast.Constant)}
    assert keys == {"model_dir", "episodes", "family", "seed", "held_out"}
    assert keys - {"model_dir"} <= declared("moe_vla_sim_node")
    assert "model_dir" in declared("moe_vla_node")
