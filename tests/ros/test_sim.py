"""moe_vla_sim_node closed-loop with moe_vla_node over real ROS 2: camera and instruction from the
world, commands back, one EpisodeOutcome per episode."""

import ast
import re
import subprocess

import time

from action_msgs.msg import GoalStatus
from geometry_msgs.msg import Twist
from moe_vla_msgs.action import FollowInstruction
from moe_vla_msgs.msg import EpisodeOutcome
from rclpy.action import ActionClient
from std_msgs.msg import String
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

import peer as p

REASONS = {"reached", "passed", "stayed", "terminated", "collision", "wrong_object", "terminated_early",
           "timeout", "moved", "fell"}
SUCCESS = {"reached", "passed", "stayed", "terminated"}


def start_sim(tmp_path, domain_id, **params):
    return p.NodeProcess(tmp_path, domain_id, params, name="sim", binary="moe_vla_sim_node")


def test_world_and_policy_close_the_loop(domain_id, peer, start_node, tmp_path):
    outcomes = "/moe_vla/episode"
    # Transient local: an untrained model may end the first episode before this subscription matches.
    peer.subscribe(outcomes, EpisodeOutcome, p.OUTCOME_QOS)
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


def test_the_node_drives_the_go2_in_the_physics_world(domain_id, peer, start_node, tmp_path):
    """The installed moe_vla_sim_node is built with the physics world (scripts/setup.sh): the
    node closes the loop with the Go2 in MuJoCo over ROS 2, and the camera is MuJoCo's."""
    outcomes = "/moe_vla/episode"
    peer.subscribe(outcomes, EpisodeOutcome, p.OUTCOME_QOS)
    peer.subscribe("/camera/image_raw", Image, qos_profile_sensor_data)
    peer.subscribe("/cmd_vel", Twist)
    node = start_node()
    sim = start_sim(tmp_path, domain_id, episodes=2, family="crawl", seed=3, rate_hz=10.0, world="physics")
    try:
        p.wait_until(lambda: len(peer.messages(outcomes)) >= 2, 120, "two episode outcomes from the physics world")
        assert sim.proc.wait(timeout=15) == 0, sim.log()
    finally:
        sim.stop()
    assert node.alive(), node.log()
    results = [m for _, m in peer.messages(outcomes)]
    assert all(r.family == "crawl" and r.reason in REASONS and r.success == (r.reason in SUCCESS) for r in results)
    frames = [m for _, m in peer.messages("/camera/image_raw")]
    assert frames and all((f.width, f.height, f.encoding) == (64, 64, "rgb8") for f in frames)
    # MuJoCo's render, not a blank frame: from the start pose the floor, the walls and the sky differ.
    # (Later frames may face a wall or lie under the bar, where few colours are in view.)
    assert max(len(set(bytes(f.data))) for f in frames[:3]) > 8
    # and the view changes as the Go2 walks
    assert len({bytes(f.data) for f in frames}) > 1
    assert peer.messages("/cmd_vel"), node.log()
    assert "physics" in sim.log()


def test_a_subscriber_that_joins_late_still_gets_the_outcomes(domain_id, peer, tmp_path):
    """A logger started after an episode ended receives its outcome from the publisher's history."""
    # No policy: the robot stands, so a stop episode ends "stayed" after its last step.
    sim = start_sim(tmp_path, domain_id, episodes=2, family="stop", seed=5, rate_hz=20.0, wait_for_subscriber_s=0.0,
                    pause_s=8.0)
    try:
        p.wait_until(lambda: re.search(r"episode 0 \(stop\): (SUCCESS|FAILURE)", sim.log()), 30,
                     "the first episode's end in the world's log")
        peer.subscribe("/moe_vla/episode", EpisodeOutcome, p.OUTCOME_QOS)
        got = p.wait_until(lambda: peer.messages("/moe_vla/episode"), 7, "the first outcome, from the history")
    finally:
        sim.stop()
    assert [(m.family, m.reason, m.success) for _, m in got] == [("stop", "stayed", True)]


def test_a_follow_instruction_goal_drives_the_world_and_cancel_stops_it(domain_id, peer, start_node, tmp_path):
    """A mission executive's view: a goal with the episode's instruction, feedback while the world
    moves, then a cancel that stops the robot."""
    peer.subscribe("/cmd_vel", Twist)
    peer.subscribe("/instruction", String, p.INSTRUCTION_QOS)
    peer.subscribe("/camera/image_raw", Image, qos_profile_sensor_data)
    # The shipped model: it heads for the target rather than ending the episode at random. The goal
    # is the only source of instructions: the world's own instruction topic, which would preempt
    # the goal whenever it reaches the node after the goal, is remapped away.
    node = start_node({"model_dir": str(p.ROOT / "models/default")}, remaps=["instruction:=/world_instruction_unused"])
    client = ActionClient(peer.node, FollowInstruction, "follow_instruction")
    assert client.wait_for_server(timeout_sec=20)
    # Real time: a go_to episode lasts up to 20 s, longer than the test needs.
    sim = start_sim(tmp_path, domain_id, episodes=1, family="go_to", seed=5, rate_hz=5.0)
    try:
        said = p.wait_until(lambda: peer.messages("/instruction"), 30, "the episode's instruction")[0][1].data
        feedback = []
        sent = client.send_goal_async(FollowInstruction.Goal(instruction=said),
                                      feedback_callback=lambda f: feedback.append(f.feedback))
        handle = p.wait_until(lambda: sent.done() and sent.result(), 20, "the goal response")
        assert handle.accepted
        p.wait_until(lambda: len([f for f in feedback if f.decision.bins]) >= 3, 30, "feedback on three decisions")
        frames_before = len(peer.messages("/camera/image_raw"))
        cancelling = handle.cancel_goal_async()
        p.wait_until(lambda: cancelling.done() and cancelling.result(), 10, "the cancel response")
        result = handle.get_result_async()
        done = p.wait_until(lambda: result.done() and result.result(), 10, "the goal result")
        cancelled = time.monotonic()
        assert done.status == GoalStatus.STATUS_CANCELED
        assert done.result.outcome == FollowInstruction.Result.CANCELLED and done.result.decisions >= 3
        time.sleep(1.0)  # observation window: the world keeps sending frames, the robot stands
        assert len(peer.messages("/camera/image_raw")) > frames_before
        after = [m for t, m in peer.messages("/cmd_vel", cancelled + 0.05)]
        assert after and all(m.linear.x == 0.0 and m.linear.y == 0.0 and m.angular.z == 0.0 for m in after)
    finally:
        sim.stop()
    decided = [f.decision for f in feedback if f.decision.bins]
    assert all(d.instruction == said for d in decided)
    assert "follow_instruction goal cancelled" in node.log()


def test_sim_node_rejects_a_bad_family(domain_id, tmp_path):
    sim = start_sim(tmp_path, domain_id, family="fly")
    code = sim.proc.wait(timeout=30)
    assert code == 1
    assert "family 'fly'" in sim.log()


def test_sim_node_rejects_an_unknown_world(domain_id, tmp_path):
    sim = start_sim(tmp_path, domain_id, world="water")
    assert sim.proc.wait(timeout=30) == 1
    assert "world 'water' is not kinematic or physics" in sim.log()


def test_sim_node_lists_its_parameters():
    assert {"family", "episodes", "seed", "held_out", "world", "image_size", "rate_hz"} <= declared("moe_vla_sim_node")


def declared(binary: str) -> set:
    out = subprocess.run([str(p.installed(binary)), "--list-params"], check=True, capture_output=True,
                         text=True).stdout
    return {line.split("\t")[0] for line in out.splitlines()}


def test_sim_launch_file_sets_only_declared_parameters():
    tree = ast.parse((p.ROOT / "launch/sim.launch.py").read_text())
    keys = {k.value for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if isinstance(k, ast.Constant)}
    policy = {"model_dir", "start_enabled"}  # the simulated robot is armed at start
    assert keys == policy | {"episodes", "family", "seed", "held_out", "world"}
    assert keys - policy <= declared("moe_vla_sim_node")
    assert policy <= declared("moe_vla_node")
