"""moe_vla_node against real rclpy peers: each test has its own ROS_DOMAIN_ID and waits for
matched publishers and subscribers rather than sleeping."""

import math
import subprocess
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from moe_vla_msgs.msg import GaitCommand, VlaDecision
from std_msgs.msg import String
from action_msgs.msg import GoalStatus
from moe_vla_msgs.action import FollowInstruction
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

import peer as p

FULL_RANGE = {  # the action space's own ranges: the node then sends the model's values unclamped
    "min_linear_x": -0.81, "max_linear_x": 3.1, "max_linear_y": 0.9, "max_angular_z": 1.6,
    "max_accel_x": 1000.0, "max_accel_y": 1000.0, "max_accel_z": 1000.0,
    "min_body_height": -0.65, "max_body_height": 0.1, "max_body_height_rate": 1000.0,
    "min_step_frequency": 2.0, "max_step_frequency": 4.0, "max_step_frequency_rate": 1000.0,
    "max_phase_offset_rate": 1000.0,
    "min_footswing_height": 0.08, "max_footswing_height": 0.18, "max_footswing_height_rate": 1000.0,
    "min_pitch": -0.8, "max_pitch": 0.0, "max_pitch_rate": 1000.0,
    "min_stance_width": 0.1, "max_stance_width": 0.55, "max_stance_width_rate": 1000.0,
}


def f32(x) -> np.float32:
    return np.float32(x)


def is_zero(twist: Twist) -> bool:
    return all(v == 0.0 for v in (twist.linear.x, twist.linear.y, twist.linear.z,
                                  twist.angular.x, twist.angular.y, twist.angular.z))


def within_limits(twist: Twist, params: dict) -> bool:
    values = (twist.linear.x, twist.linear.y, twist.angular.z)
    return (all(math.isfinite(v) for v in values)
            and params["min_linear_x"] <= twist.linear.x <= params["max_linear_x"]
            and abs(twist.linear.y) <= params["max_linear_y"]
            and abs(twist.angular.z) <= params["max_angular_z"])


class Camera:
    """Publishes one picture at a fixed rate on a background thread until stopped."""

    def __init__(self, peer, publisher, msg, rate_hz, stamp=None):
        self.peer, self.publisher, self.msg, self.period = peer, publisher, msg, 1.0 / rate_hz
        # Stamps from the peer's clock, or from `stamp()` (a simulated clock, as a bag's frames).
        self.stamp = stamp or (lambda: p.now_stamp(peer.node))
        self.sent = 0
        self.stamps = []
        self.last_sent = None
        self.last_fresh = None
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        next_time = time.monotonic()
        while not self._stop.is_set():
            frozen = self._frozen.is_set()
            if not frozen:
                self.msg.header.stamp = self.stamp()
                self.stamps.append(p.stamp_seconds(self.msg.header.stamp))
            self.publisher.publish(self.msg)
            self.last_sent = time.monotonic()
            if not frozen:
                self.last_fresh = self.last_sent
            self.sent += 1
            next_time += self.period
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.last_sent

    def freeze(self):
        """From now on every frame repeats the last stamp, as a driver re-sending an old frame."""
        self._frozen.set()


def connect(peer, stamped=False, cmd_topic="cmd_vel", ns="", compressed=False):
    """Publishers and subscriptions for a node; waits until the node sees and is seen."""
    base = f"{ns}/" if ns else ""
    camera = peer.camera(base + ("camera/image_raw/compressed" if compressed else "camera/image_raw"),
                         compressed=compressed)
    instruction = peer.instruction_publisher(base + "instruction")
    peer.subscribe(cmd_topic, TwistStamped if stamped else Twist)
    peer.subscribe(base + "gait_command", GaitCommand)
    peer.subscribe(base + "moe_vla_node/decision", VlaDecision)
    peer.subscribe("/diagnostics", DiagnosticArray)
    peer.wait_matched(camera)
    peer.wait_matched(instruction)
    peer.wait_publisher(cmd_topic)
    return camera, instruction


def say(publisher, text):
    publisher.publish(String(data=text))


def twists(peer, since=0.0, topic="cmd_vel"):
    return [(t, m) for t, m in peer.messages(topic, since)]


def test_frame_and_instruction_give_the_offline_policys_command(peer, start_node, scenes):
    img, offline = scenes["moving"][0]
    params = dict(FULL_RANGE)
    node = start_node(params)
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    decisions = p.wait_until(lambda: peer.messages("moe_vla_node/decision"), 30, "a decision")
    start = decisions[0][0]
    want, g = offline["twist"], offline["gait"]

    def is_decided_twist(t):
        return (f32(t.linear.x), f32(t.linear.y), f32(t.angular.z)) == (
            f32(want["x_vel"]), f32(want["y_vel"]), f32(want["yaw_vel"]))

    def is_decided_gait(m):
        return ([f32(v) for v in m.phase_offsets] == [f32(v) for v in g["phase_offsets"]]
                and all(f32(getattr(m, field)) == f32(g[field])
                        for field in ("body_height", "step_frequency", "footswing_height", "pitch", "stance_width")))

    # With limits as wide as the action space and rates far above any step, the node sends exactly
    # the model's command from the first full control period after the decision (a tick right after
    # the previous one moves only rate x its short period).
    moving = p.wait_until(lambda: [m for _, m in twists(peer, start) if is_decided_twist(m)], 10, "the decided twist")
    gaits = p.wait_until(lambda: [m for _, m in peer.messages("gait_command", start) if is_decided_gait(m)], 10,
                         "the decided gait")
    cam.stop()

    decision = decisions[0][1]
    assert list(decision.bins) == offline["bins"]
    assert [f32(v) for v in decision.values] == [f32(v) for v in offline["values"]]
    assert [f32(q) for q in decision.q_values] == [f32(q) for q in offline["q"]]
    assert list(decision.dimension_names) == offline["names"]
    assert decision.instruction == scenes["instruction"] and not decision.terminate
    assert decision.model_id == "tiny" and decision.latency_ms > 0
    assert len(decision.expert_load) == 8 and abs(sum(decision.expert_load) - 1) < 1e-3

    assert not is_zero(moving[0]) and within_limits(moving[0], params)
    assert all(within_limits(m, params) for _, m in twists(peer))
    assert gaits[0].header.frame_id == "base_link"
    assert node.alive()


@pytest.mark.parametrize("preset", ["tiny-streaming", "tiny-minilm"])
def test_streaming_and_sentence_encoder_models_decide_in_the_node_as_offline(peer, start_node, preset, tmp_path):
    """The streaming decoder and the installed sentence encoder work inside the node: its first
    decision equals `moe_vla decide` on the same picture and instruction."""
    model = tmp_path / preset
    subprocess.run([str(p.installed("moe_vla")), "init", "--preset", preset, "--seed", "3",
                    "--instructions", str(p.ROOT / "data/instructions.txt"), "--out", str(model)],
                   check=True, capture_output=True)
    img = p.picture(p.WIDTH, p.HEIGHT, 5)
    text = "please make your way to the red ball"
    offline = p.offline_decision(model, img, text, tmp_path)
    node = start_node({"model_dir": str(model)})
    camera, instruction = connect(peer)
    say(instruction, text)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    decisions = p.wait_until(lambda: peer.messages("moe_vla_node/decision"), 30, "a decision")
    cam.stop()
    decision = decisions[0][1]
    assert list(decision.bins) == offline["bins"]
    assert [f32(q) for q in decision.q_values] == [f32(q) for q in offline["q"]]
    assert decision.model_id == preset and node.alive()


def test_limits_clamp_the_models_command(peer, start_node, scenes):
    img, offline = scenes["moving"][0]
    cap = abs(offline["twist"]["x_vel"]) / 2
    params = dict(FULL_RANGE, min_linear_x=-cap, max_linear_x=cap, max_accel_x=1.0)
    start_node(params)
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: peer.messages("moe_vla_node/decision"), 30, "a decision")
    # Ramping at 1 m/s^2 to the cap: every step at most 1 m/s^2 x elapsed time, never past the cap.
    p.wait_until(lambda: any(abs(abs(m.linear.x) - cap) < 1e-6 for _, m in twists(peer)), 10, "the capped speed")
    cam.stop()
    xs = [(t, m.linear.x) for t, m in twists(peer)]
    assert all(abs(x) <= cap + 1e-9 for _, x in xs)
    for (t0, x0), (t1, x1) in zip(xs, xs[1:]):
        if x0 != 0.0 and x1 != 0.0:
            # arrival times jitter; the node limits by its own clock, so allow a little slack
            assert abs(x1 - x0) <= 1.0 * max(t1 - t0, 0.1) + 0.05


def test_camera_loss_stops_within_the_timeout_and_frames_resume(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    timeout, rate = 0.5, 10.0
    start_node(dict(FULL_RANGE, image_timeout_s=timeout, control_rate_hz=rate))
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    last_frame = cam.stop()

    def stop_after_moving():
        # The first zero twist after the last moving one (zeros from before the first decision
        # may still arrive after the last frame).
        received = twists(peer)
        last_moving = max(t for t, m in received if not is_zero(m))
        return [t for t, m in received if t > last_moving and is_zero(m)]

    zero = p.wait_until(stop_after_moving, 5, "a zero twist")
    # Within the timeout plus one control period (and 50 ms for transport and scheduling).
    assert zero[0] - last_frame <= timeout + 1.0 / rate + 0.05, zero[0] - last_frame
    # Stopped means stopped: nothing but zeros until frames return.
    time.sleep(0.5)  # observation window, not synchronisation
    resumed_at = time.monotonic()
    assert all(is_zero(m) for t, m in twists(peer, zero[0]))
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer, resumed_at) if not is_zero(m)], 10, "commands to resume")
    cam.stop()


def test_enable_service_stops_holds_and_resumes(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    start_node(FULL_RANGE)
    camera, instruction = connect(peer)
    client = peer.node.create_client(SetBool, "moe_vla_node/enable")
    assert client.wait_for_service(timeout_sec=20)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")

    def call(value):
        future = client.call_async(SetBool.Request(data=value))
        return p.wait_until(lambda: future.done() and future.result(), 10, "the ~/enable response")

    response = call(False)
    answered = time.monotonic()
    assert response.success
    first = p.wait_until(lambda: twists(peer, answered), 5, "a twist after disabling")
    time.sleep(0.6)  # frames keep coming while disabled: the node must hold the stop
    held = twists(peer, answered)
    assert len(held) >= 5 and all(is_zero(m) for _, m in held), [m for _, m in held if not is_zero(m)]
    assert first

    assert call(True).success
    enabled = time.monotonic()
    p.wait_until(lambda: [m for _, m in twists(peer, enabled) if not is_zero(m)], 10, "commands to resume")
    cam.stop()


def test_terminate_stops_and_holds_until_a_new_instruction(peer, start_node, scenes):
    if not scenes["terminating"]:
        raise AssertionError("no test picture makes the model terminate")
    stop_img, offline = scenes["terminating"][0]
    go_img, _ = scenes["moving"][0]
    start_node(FULL_RANGE)
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(go_img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    cam.stop()
    # A new instruction starts a new history; the terminating picture then ends the episode.
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(stop_img), rate_hz=20)
    terminated = p.wait_until(
        lambda: [t for t, m in peer.messages("moe_vla_node/decision") if m.terminate], 20, "a terminate decision")
    cam.stop()
    assert offline["terminate"]
    after = terminated[0]
    # Moving pictures do not restart it: only a new instruction does.
    cam = Camera(peer, camera, p.image_msg(go_img), rate_hz=20)
    time.sleep(1.0)  # observation window
    assert all(is_zero(m) for _, m in twists(peer, after + 0.05))
    renewed = time.monotonic()
    say(instruction, scenes["instruction"])
    p.wait_until(lambda: [m for _, m in twists(peer, renewed) if not is_zero(m)], 10, "commands after a new instruction")
    cam.stop()


def test_flood_of_vga_frames_keeps_rate_memory_and_latency_bounded(peer, start_node, scenes):
    params = dict(FULL_RANGE, min_linear_x=-0.5, max_linear_x=1.0, max_linear_y=0.5, max_angular_z=1.0,
                  control_rate_hz=10.0, image_input="compressed")
    node = start_node(params)
    camera, instruction = connect(peer, compressed=True)
    say(instruction, scenes["instruction"])
    # Compressed, as docs/node.md advises with localhost discovery: rmw_fastrtps then chooses the
    # transports and loses most best-effort raw VGA frames (900 KB), which once left this test
    # without a single frame for 21 s. The PNG (400 KB) is decoded for each decision.
    vga = p.compressed_msg(p.png(p.picture(640, 480, 3)), "png")
    warm = Camera(peer, camera, vga, rate_hz=10)
    p.wait_until(lambda: len(peer.messages("moe_vla_node/decision")) >= 5, 30, "the first decisions")
    warm.stop()
    rss_before = node.rss_mb()

    start = time.monotonic()
    flood = Camera(peer, camera, vga, rate_hz=200)
    time.sleep(5.0)  # the flood's duration
    flood.stop()
    end = time.monotonic()
    rate = flood.sent / (end - start)
    assert node.alive(), node.log()[-2000:]
    rss_after = node.rss_mb()

    cmds = twists(peer, start)
    cmds = [m for t, m in cmds if t <= end]
    assert len(cmds) >= 0.9 * 10 * (end - start), f"{len(cmds)} commands in {end - start:.1f} s"
    assert all(within_limits(m, params) for m in cmds)
    decisions = [m for t, m in peer.messages("moe_vla_node/decision", start) if t <= end]
    latencies = sorted(d.latency_ms for d in decisions)
    assert decisions and len(decisions) < flood.sent, "inference was not slower than the camera"
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    # No queue: a frame waits at most for the decision in progress.
    assert p99 < 1000, latencies[-10:]
    assert rss_after - rss_before < 150, (rss_before, rss_after)
    diag = p.wait_until(lambda: peer.messages("/diagnostics", end), 5, "diagnostics")
    values = {kv.key: kv.value for status in diag[-1][1].status for kv in status.values}
    # No queue: every frame the node received was decided or replaced by a newer one before the
    # model got to it (at most one may still be waiting). Whether any were replaced depends on how
    # fast this machine's inference is against the flood; that none pile up does not.
    count = {k: int(values[k]) for k in ("frames_received", "frames_dropped", "decisions", "stale_decisions", "failed_decisions")}
    waiting = count["frames_received"] - count["frames_dropped"] - count["decisions"] - count["failed_decisions"]
    assert count["failed_decisions"] == 0 and waiting in (0, 1), values
    print(f"flood: {rate:.0f} frames/s sent, {len(decisions)} decisions, latency median "
          f"{latencies[len(latencies) // 2]:.1f} ms p99 {p99:.1f} ms, RSS {rss_before:.0f} -> {rss_after:.0f} MB")


def test_bad_input_is_logged_and_never_moves_the_robot(peer, start_node, scenes, domain_id):
    node = start_node(FULL_RANGE)
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    good = p.picture(p.WIDTH, p.HEIGHT, 1)
    bad_frames = []
    unknown = p.image_msg(good)
    unknown.encoding = "yuv422"
    bad_frames.append(unknown)
    short = p.image_msg(good)
    short.data = bytes(short.data)[:-7]
    bad_frames.append(short)
    empty = p.image_msg(good)
    empty.width = empty.height = empty.step = 0
    empty.data = b""
    bad_frames.append(empty)
    reasons = ["unsupported encoding 'yuv422'", "frame data is 57593 bytes", "frame is 0x0"]
    for msg, reason in zip(bad_frames, reasons):
        # Best-effort QoS may drop a frame: publish until the node has said what was wrong.
        p.wait_until(lambda: camera.publish(msg) or reason in node.log(), 10, f"'{reason}' in the log")
    # Cheaper bad input first, then instructions: a 1 MB one and invalid UTF-8.
    say(instruction, "go " * 350_000)
    p.wait_until(lambda: "rejected instruction" in node.log(), 10, "the huge instruction to be rejected")
    raw_pub = peer.publisher("instruction", String, p.INSTRUCTION_QOS)
    raw_pub.publish(p.string_cdr(b"go to the \xff\xfe ball"))
    p.wait_until(lambda: "not valid UTF-8" in node.log(), 10, "invalid UTF-8 to be rejected")
    assert node.alive()
    for t, m in twists(peer):
        assert is_zero(m), m

    # Compressed input: a corrupt JPEG fails its decision, and the robot stays stopped.
    compressed = start_node(dict(FULL_RANGE, image_input="compressed"), name="compressed",
                            remaps=["__ns:=/cmp"])
    cam_c, instr_c = connect(peer, cmd_topic="/cmp/cmd_vel", ns="/cmp", compressed=True)
    say(instr_c, scenes["instruction"])
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    # A camera that keeps sending: frames that arrive before the instruction are not decided.
    corrupt = Camera(peer, cam_c, p.compressed_msg(jpeg), rate_hz=20)
    p.wait_until(lambda: "decision failed" in compressed.log(), 20, "the corrupt JPEG to be reported")
    corrupt.stop()
    assert "cannot decode compressed frame" in compressed.log()
    assert compressed.alive() and node.alive()
    assert all(is_zero(m) for _, m in twists(peer, topic="/cmp/cmd_vel"))
    # Repeated bad input is reported at a limited rate: one line per kind here.
    for _ in range(20):
        camera.publish(bad_frames[0])
    time.sleep(0.3)  # let them arrive
    assert node.log().count("unsupported encoding") <= 2


def test_stamped_output_namespace_and_remap(peer, start_node, scenes):
    img, offline = scenes["moving"][0]
    start_node(dict(FULL_RANGE, use_stamped=True, frame_id="trunk"),
               remaps=["__ns:=/robot1", "cmd_vel:=/mux/vla_cmd_vel"])
    camera, instruction = connect(peer, stamped=True, cmd_topic="/mux/vla_cmd_vel", ns="/robot1")
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    moving = p.wait_until(
        lambda: [m for _, m in twists(peer, topic="/mux/vla_cmd_vel") if not is_zero(m.twist)], 30,
        "a moving TwistStamped on the remapped topic")
    cam.stop()
    msg = moving[0]
    assert msg.header.frame_id == "trunk" and p.stamp_seconds(msg.header.stamp) > 0
    assert f32(msg.twist.linear.x) == f32(offline["twist"]["x_vel"])
    assert peer.messages("/robot1/moe_vla_node/decision")
    assert peer.messages("/robot1/gait_command")
    assert not peer.node.count_publishers("/cmd_vel") and not peer.node.count_publishers("/robot1/cmd_vel")


def test_final_stop_on_sigterm(peer, start_node, scenes):
    import signal

    img, _ = scenes["moving"][0]
    node = start_node(FULL_RANGE)
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    signalled = time.monotonic()
    assert node.stop(signal.SIGTERM) == 0
    cam.stop()
    after = twists(peer, signalled)
    assert after and is_zero(after[-1][1])


def test_missing_or_corrupt_model_exits_with_a_one_line_reason(tmp_path, model_dir, domain_id):
    import shutil
    import subprocess

    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    cases = {tmp_path / "missing": "config.json is missing", corrupt: "model.safetensors"}
    for model, reason in cases.items():
        out = subprocess.run(
            [str(p.installed("moe_vla_node")), "--ros-args", "-p", f"model_dir:={model}"],
            capture_output=True, text=True, timeout=60,
            env=dict(__import__("os").environ, ROS_DOMAIN_ID=str(domain_id)),
        )
        assert out.returncode != 0
        lines = [line for line in out.stderr.splitlines() if line.startswith("moe_vla_node:")]
        assert len(lines) == 1 and reason in lines[0] and str(model) in lines[0], out.stderr


class SimClock:
    """Publishes /clock as `ros2 bag play --clock` does: sim time advancing at `rate` (0 = paused),
    from a background thread; `jump(by)` moves it at once."""

    def __init__(self, peer, start=100.0):
        from rclpy.qos import qos_profile_system_default
        from rosgraph_msgs.msg import Clock

        self._msg = Clock
        self.publisher = peer.publisher("/clock", Clock, qos_profile_system_default)
        self.now, self.rate = start, 1.0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._publishing = threading.Event()
        self._publishing.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            with self.lock:
                msg = self._msg()
                msg.clock.sec, msg.clock.nanosec = int(self.now), int(round(self.now % 1 * 1e9)) % 1_000_000_000
                self.now += self.rate * 0.02
            if self._publishing.is_set():
                self.publisher.publish(msg)
            time.sleep(0.02)

    def stamp(self):
        from builtin_interfaces.msg import Time

        with self.lock:
            return Time(sec=int(self.now), nanosec=int(round(self.now % 1 * 1e9)) % 1_000_000_000)

    def jump(self, by):
        with self.lock:
            self.now += by

    def freeze(self):
        """Stops publishing /clock: ROS time stands still at its last value."""
        self._publishing.clear()

    def stop(self):
        self._stop.set()
        self._thread.join()


def test_sim_time_drives_stamps_and_the_watchdog(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    start_node(dict(FULL_RANGE, use_sim_time=True, use_stamped=True, image_timeout_s=0.5))
    sim = SimClock(peer)
    camera, instruction = connect(peer, stamped=True)
    peer.wait_matched(sim.publisher)
    sim.start()
    say(instruction, scenes["instruction"])
    # Frames stamped in sim time, as a bag's frames are under `ros2 bag play --clock`.
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20, stamp=sim.stamp)
    moving = p.wait_until(
        lambda: [m for _, m in twists(peer) if not is_zero(m.twist) and p.stamp_seconds(m.header.stamp) > 0], 30,
        "a moving command stamped with /clock time")
    assert 100.0 <= p.stamp_seconds(moving[0].header.stamp) <= sim.now + 1e-6
    # The camera stops while sim time runs: within the timeout the robot stops, stamped in sim time.
    cam.stop()
    last_frame = p.stamp_seconds(cam.msg.header.stamp)
    stop = p.wait_until(
        lambda: [m for _, m in twists(peer) if is_zero(m.twist) and p.stamp_seconds(m.header.stamp) > last_frame], 10,
        "a stop in sim time")
    sim.stop()
    stopped_at = p.stamp_seconds(stop[0].header.stamp)
    assert last_frame < stopped_at <= last_frame + 0.5 + 0.1 + 0.05, (last_frame, stopped_at)


def test_instruction_parameter_is_followed_from_start_up(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    node = start_node(dict(FULL_RANGE, instruction=scenes["instruction"]))
    camera, _ = connect(peer)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist without an instruction message")
    cam.stop()
    assert f'new instruction: "{scenes["instruction"]}"' in node.log()


def test_a_new_instruction_is_decided_on_the_newest_frame_without_waiting_for_another(peer, start_node, scenes):
    """Frames that came before the instruction are not wasted: the first decision is made on the
    newest one at once, while it is within the image timeout, and the watchdog still stops the
    robot when no newer frame follows."""
    img, _ = scenes["moving"][0]
    timeout = 3.0  # wide, so a slow machine cannot let the frame expire before the instruction lands
    start_node(dict(FULL_RANGE, image_timeout_s=timeout, max_decision_age_s=timeout))
    camera, instruction = connect(peer)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    time.sleep(0.5)
    last_sent = cam.stop()
    assert not peer.messages("moe_vla_node/decision"), "decided without an instruction"
    said = time.monotonic()
    say(instruction, scenes["instruction"])
    decisions = p.wait_until(lambda: peer.messages("moe_vla_node/decision"), 10, "a decision without a new frame")
    decided_at, decision = decisions[0]
    # Made on a frame sent before the instruction (the camera has stopped), and in time to drive.
    assert p.stamp_seconds(decision.header.stamp) in cam.stamps
    assert decision.instruction == scenes["instruction"] and decided_at >= said
    moving = p.wait_until(lambda: [t for t, m in twists(peer, said) if not is_zero(m)], 10, "a moving twist")
    # No frame newer than that one: the image watchdog stops the robot within the timeout.
    zero = p.wait_until(lambda: stop_after_moving(peer), timeout + 5, "a zero twist after moving")
    assert moving[0] < zero[0] <= last_sent + timeout + 1.0, (zero[0] - last_sent)


def stop_after_moving(peer):
    """Arrival times of zero twists after the last moving one."""
    received = twists(peer)
    last_moving = max(t for t, m in received if not is_zero(m))
    return [t for t, m in received if t > last_moving and is_zero(m)]


def test_frames_repeating_an_old_stamp_stop_within_the_timeout(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    timeout, rate = 0.5, 10.0
    node = start_node(dict(FULL_RANGE, image_timeout_s=timeout, control_rate_hz=rate))
    camera, instruction = connect(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    cam.freeze()
    zero = p.wait_until(lambda: stop_after_moving(peer), 5, "a zero twist")
    last_fresh = cam.last_fresh
    # Frames keep arriving, but none is new: stopped within the timeout plus one control period
    # (and 50 ms for transport and scheduling) after the last fresh one.
    assert zero[0] - last_fresh <= timeout + 1.0 / rate + 0.05, zero[0] - last_fresh
    time.sleep(0.5)  # observation window: the stop holds while the repeats go on
    assert all(is_zero(m) for _, m in twists(peer, zero[0]))
    cam.stop()
    assert "repeat an old header stamp" in node.log(), node.log()


def test_instructions_from_default_and_latching_publishers_are_each_heard_once(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    node = start_node(FULL_RANGE)
    camera, latching = connect(peer)
    plain = peer.publisher("instruction", String)  # rclpy's default QoS: reliable, volatile
    peer.wait_matched(plain)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    say(plain, "go to the blue box")
    p.wait_until(lambda: [m for _, m in peer.messages("moe_vla_node/decision") if m.instruction == "go to the blue box"],
                 30, "a decision for the default publisher's instruction")
    said = time.monotonic()
    say(latching, scenes["instruction"])
    p.wait_until(lambda: [m for _, m in peer.messages("moe_vla_node/decision", said)
                          if m.instruction == scenes["instruction"]], 30, "a decision for the latched instruction")
    cam.stop()
    # The latched message reaches both of the node's subscriptions and still counts once.
    assert node.log().count("new instruction:") == 2, node.log()
    assert "best-effort" not in node.log()


def test_a_best_effort_instruction_publisher_is_named_in_a_warning(peer, start_node):
    node = start_node()
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    peer.publisher("instruction", String, qos)
    p.wait_until(lambda: "best-effort" in node.log(), 20, "the incompatible-QoS warning")
    assert "moe_vla_test_peer" in node.log()
    assert node.alive()


def test_the_best_effort_warning_watches_the_topic_the_first_matching_remap_names(peer, start_node):
    # rcl applies the first rule that matches, so the node listens on /first_rule; a best-effort
    # publisher there is the one it cannot hear.
    node = start_node(remaps=["instruction:=/first_rule", "instruction:=/second_rule"])
    peer.publisher("/first_rule", String, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    p.wait_until(lambda: "best-effort" in node.log(), 20, "the incompatible-QoS warning")
    assert "/first_rule" in node.log() and "/second_rule" not in node.log()


def goal_client(peer):
    client = ActionClient(peer.node, FollowInstruction, "follow_instruction")
    assert client.wait_for_server(timeout_sec=20)
    return client


def send_goal(client, text, feedback):
    sent = client.send_goal_async(FollowInstruction.Goal(instruction=text),
                                  feedback_callback=lambda f: feedback.append((time.monotonic(), f.feedback)))
    return p.wait_until(lambda: sent.done() and sent.result(), 20, "the goal response")


def goal_result(handle):
    future = handle.get_result_async()
    return p.wait_until(lambda: future.done() and future.result(), 20, "the goal result")


def test_a_follow_instruction_goal_ends_when_the_model_terminates(peer, start_node, scenes):
    if not scenes["terminating"]:
        raise AssertionError("no test picture makes the model terminate")
    stop_img, _ = scenes["terminating"][0]
    node = start_node(FULL_RANGE)
    camera, _ = connect(peer)
    client = goal_client(peer)
    assert not send_goal(client, "   ", []).accepted, "an empty instruction is refused"
    feedback = []
    handle = send_goal(client, scenes["instruction"], feedback)
    assert handle.accepted
    cam = Camera(peer, camera, p.image_msg(stop_img), rate_hz=20)
    done = goal_result(handle)
    cam.stop()
    assert done.status == GoalStatus.STATUS_SUCCEEDED
    assert done.result.outcome == FollowInstruction.Result.TERMINATED and done.result.decisions >= 1
    # The goal's first feedback (standing, waiting for a decision) comes at once. Feedback sent just
    # before the result may be dropped by the client once the goal is done (ROS 2 action semantics),
    # so the terminating decision itself is checked through the result's count only.
    assert feedback and feedback[0][1].stopped and feedback[0][1].stop_reason
    assert all(f.decision.instruction == scenes["instruction"] for _, f in feedback if f.decision.bins)
    assert node.alive()


def test_a_goal_sent_while_the_node_starts_waits_for_the_start_to_arm_it_or_not(peer, start_node, scenes):
    """The action server answers before the model has loaded; a goal sent then must not end as
    'disabled' when start_enabled is about to arm the node (a race CI once lost)."""
    img, _ = scenes["moving"][0]
    start_node(FULL_RANGE)
    early = send_goal(goal_client(peer), scenes["instruction"], feedback := [])
    camera, _ = connect(peer)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    p.wait_until(lambda: any(f.decision.bins for _, f in feedback), 30, "feedback with a decision on the early goal")
    cam.stop()
    early.cancel_goal_async()
    assert goal_result(early).status == GoalStatus.STATUS_CANCELED


def test_a_goal_sent_while_a_disarmed_node_starts_ends_saying_so(peer, start_node, scenes):
    start_node({**FULL_RANGE, "start_enabled": None})
    done = goal_result(send_goal(goal_client(peer), scenes["instruction"], []))
    assert done.status == GoalStatus.STATUS_ABORTED
    assert done.result.outcome == FollowInstruction.Result.STOPPED_BY_SAFETY and "disabled" in done.result.message


def test_a_newer_goal_or_a_topic_instruction_preempts_a_goal(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    start_node(FULL_RANGE)
    camera, instruction = connect(peer)
    client = goal_client(peer)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=10)
    first = send_goal(client, scenes["instruction"], [])
    second = send_goal(client, "go to the blue box", [])
    preempted = goal_result(first)
    assert preempted.status == GoalStatus.STATUS_ABORTED
    assert preempted.result.outcome == FollowInstruction.Result.PREEMPTED
    p.wait_until(lambda: [m for _, m in peer.messages("moe_vla_node/decision") if m.instruction == "go to the blue box"],
                 30, "a decision for the newer goal")
    say(instruction, scenes["instruction"])
    replaced = goal_result(second)
    cam.stop()
    assert replaced.result.outcome == FollowInstruction.Result.PREEMPTED
    assert "instruction topic" in replaced.result.message
