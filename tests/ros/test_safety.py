"""What a supervised trial on a real quadruped relies on, against real rclpy peers: a disarmed
start, the e-stop and the deadman, clocks that jump back or freeze, silence when idle (so twist_mux
falls through to navigation), the lifecycle as nav2_lifecycle_manager drives it, diagnostics before
arming, and the gait command of a stopped robot."""

import subprocess
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableStates, GetAvailableTransitions, GetState
from moe_vla_msgs.msg import GaitCommand
from rcl_interfaces.srv import GetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

import peer as p
from test_node import FULL_RANGE, Camera, SimClock, connect, is_zero, say, stop_after_moving, twists

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def call(client, request, what="a service response", timeout=30.0):
    future = client.call_async(request)
    return p.wait_until(lambda: future.done() and future.result(), timeout, what)


def client(peer, srv, name):
    c = peer.node.create_client(srv, name)
    assert c.wait_for_service(timeout_sec=30), f"{name} not discovered"
    return c


def moving(peer, since=0.0):
    return [t for t, m in twists(peer, since) if not is_zero(m)]


def following_on_sim_time(peer, start_node, scenes, start, timeout, rate):
    """A node on /clock (a SimClock from `start`) following an instruction, with a camera stamped in
    sim time; returns once it moves."""
    img, _ = scenes["moving"][0]
    start_node(dict(FULL_RANGE, use_sim_time=True, image_timeout_s=timeout, control_rate_hz=rate))
    sim = SimClock(peer, start=start)
    camera, instruction = connect(peer)
    peer.wait_matched(sim.publisher)
    sim.start()
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20, stamp=sim.stamp)
    p.wait_until(lambda: moving(peer), 30, "a moving twist")
    return sim, cam


def test_started_without_parameters_it_stays_still_until_enabled(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    # No parameter file and no start_enabled: the node's own defaults (FULL_RANGE only widens the
    # limits, so any command the model makes would go out unclamped).
    node = start_node(dict(FULL_RANGE, start_enabled=None))
    camera, instruction = connect(peer)
    enable = client(peer, SetBool, "moe_vla_node/enable")
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    # The model decides (a latched instruction and a camera are there) but nothing moves.
    p.wait_until(lambda: len(peer.messages("moe_vla_node/decision")) >= 5, 30, "decisions while disarmed")
    time.sleep(1.0)  # observation window
    assert not moving(peer)
    assert "disarmed until ~/enable" in node.log()
    assert call(enable, SetBool.Request(data=True)).success
    armed = time.monotonic()
    p.wait_until(lambda: moving(peer, armed), 10, "a moving twist once enabled")
    cam.stop()


def test_the_estop_stops_within_a_period_and_its_release_does_not_move_the_robot(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    rate = 10.0
    node = start_node(dict(FULL_RANGE, control_rate_hz=rate))
    camera, instruction = connect(peer)
    estop = peer.publisher("estop", Bool, LATCHED)
    peer.wait_matched(estop)
    enable = client(peer, SetBool, "moe_vla_node/enable")
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: moving(peer), 30, "a moving twist")

    estop.publish(Bool(data=True))
    engaged = time.monotonic()
    zero = p.wait_until(lambda: [t for t, m in twists(peer, engaged) if is_zero(m)], 5, "a stop after the e-stop")
    assert zero[0] - engaged <= 1.0 / rate + 0.05, zero[0] - engaged
    time.sleep(1.0)  # frames and decisions keep coming: the stop must hold
    assert not moving(peer, zero[0])
    refused = call(enable, SetBool.Request(data=True))
    assert not refused.success and "e-stop" in refused.message, refused.message

    estop.publish(Bool(data=False))
    time.sleep(1.5)  # observation window: released, not re-armed
    assert not moving(peer, zero[0])
    assert "e-stop released; still disarmed" in node.log()
    assert call(enable, SetBool.Request(data=True)).success
    armed = time.monotonic()
    p.wait_until(lambda: moving(peer, armed), 10, "a moving twist once enabled again")
    cam.stop()


def test_the_deadman_stops_the_robot_when_its_heartbeat_stops(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    timeout, rate = 0.3, 10.0
    start_node(dict(FULL_RANGE, deadman_timeout_s=timeout, control_rate_hz=rate))
    camera, instruction = connect(peer)
    heartbeat = peer.publisher("deadman", Bool)
    peer.wait_matched(heartbeat)
    beating = threading.Event()
    beating.set()
    done = threading.Event()
    last_beat = [0.0]

    def beat():
        while not done.is_set():
            if beating.is_set():
                heartbeat.publish(Bool(data=True))
                last_beat[0] = time.monotonic()
            time.sleep(0.05)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    try:
        p.wait_until(lambda: moving(peer), 30, "a moving twist while the heartbeat comes")
        beating.clear()
        time.sleep(0.06)
        zero = p.wait_until(lambda: stop_after_moving(peer), 5, "a stop once the heartbeat stops")
        assert zero[0] - last_beat[0] <= timeout + 1.0 / rate + 0.05, zero[0] - last_beat[0]
        time.sleep(1.0)  # observation window
        assert not moving(peer, zero[0])
        beating.set()
        resumed = time.monotonic()
        p.wait_until(lambda: moving(peer, resumed), 10, "a moving twist once the heartbeat is back")
    finally:
        done.set()
        thread.join()
        cam.stop()


def test_a_backward_clock_jump_with_the_camera_lost_stops_within_the_timeout_and_stays_stopped(peer, start_node, scenes):
    timeout, rate = 0.5, 10.0
    sim, cam = following_on_sim_time(peer, start_node, scenes, 200.0, timeout, rate)
    try:
        # A 100 s jump back (a looping bag, a simulator reset), and the camera is lost right after.
        sim.jump(-100.0)
        last_frame = cam.stop()
        zero = p.wait_until(lambda: stop_after_moving(peer), 5, "a stop after the jump")
        # Within the image timeout plus one period of steady time (and 50 ms for transport).
        assert zero[0] - last_frame <= timeout + 1.0 / rate + 0.05, zero[0] - last_frame
        time.sleep(3.0)  # observation window: sim time runs on, no frame comes
        assert not moving(peer, zero[0])
        assert twists(peer, time.monotonic() - 0.5), "a lost camera is not idle: stop commands keep coming"
    finally:
        cam.stop()
        sim.stop()


def test_a_frozen_clock_with_the_camera_lost_stops_within_the_timeout_of_steady_time(peer, start_node, scenes):
    timeout, rate = 0.5, 10.0
    sim, cam = following_on_sim_time(peer, start_node, scenes, 300.0, timeout, rate)
    try:
        # /clock stops (a paused player, a crashed simulator), then the camera.
        sim.freeze()
        last_frame = cam.stop()
        zero = p.wait_until(lambda: stop_after_moving(peer), 5, "a stop with the clock frozen")
        assert zero[0] - last_frame <= timeout + 1.0 / rate + 0.05, zero[0] - last_frame
        time.sleep(2.0)  # observation window
        assert not moving(peer, zero[0])
    finally:
        cam.stop()
        sim.stop()


def test_after_a_disable_the_node_goes_quiet_within_a_second_and_speaks_again_when_armed(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    start_node(dict(FULL_RANGE, control_rate_hz=10.0))
    camera, instruction = connect(peer)
    enable = client(peer, SetBool, "moe_vla_node/enable")
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: moving(peer), 30, "a moving twist")
    assert call(enable, SetBool.Request(data=False)).success
    disabled = time.monotonic()
    time.sleep(2.5)  # observation window; frames keep coming
    after = twists(peer, disabled)
    # Zeros first (the stop), then nothing: twist_mux's timeout lets navigation through.
    assert after and all(is_zero(m) for _, m in after), [m for _, m in after if not is_zero(m)]
    assert max(t for t, _ in after) - disabled <= 1.0, max(t for t, _ in after) - disabled
    gaits = peer.messages("gait_command", disabled + 1.0)
    assert not gaits, f"{len(gaits)} gait commands while quiet"
    assert call(enable, SetBool.Request(data=True)).success
    armed = time.monotonic()
    p.wait_until(lambda: moving(peer, armed), 10, "commands once armed again")
    cam.stop()


def test_a_lifecycle_manager_configures_activates_deactivates_and_shuts_it_down(peer, start_node, scenes, tmp_path):
    # The sentence-encoder model: loading and checking its 90 MB encoder makes configure take long
    # enough to ask the parameter services meanwhile.
    model = tmp_path / "minilm"
    subprocess.run([str(p.installed("moe_vla")), "init", "--preset", "tiny-minilm", "--seed", "3",
                    "--instructions", str(p.ROOT / "data/instructions.txt"), "--out", str(model)],
                   check=True, capture_output=True)
    node = start_node(dict(FULL_RANGE, model_dir=str(model), managed=True, start_enabled=None))
    change = client(peer, ChangeState, "moe_vla_node/change_state")
    get_state = client(peer, GetState, "moe_vla_node/get_state")
    transitions = client(peer, GetAvailableTransitions, "moe_vla_node/get_available_transitions")
    states = client(peer, GetAvailableStates, "moe_vla_node/get_available_states")
    get_params = client(peer, GetParameters, "moe_vla_node/get_parameters")
    enable = client(peer, SetBool, "moe_vla_node/enable")
    peer.subscribe("moe_vla_node/transition_event", TransitionEvent)
    camera, instruction = connect(peer)

    def state():
        return call(get_state, GetState.Request()).current_state.label

    def transition(tid):
        return call(change, ChangeState.Request(transition=Transition(id=tid)), timeout=60).success

    assert state() == "unconfigured"
    assert {t.transition.label for t in call(transitions, GetAvailableTransitions.Request()).available_transitions} == {
        "configure", "shutdown"}
    assert {1, 2, 3, 4} <= {s.id for s in call(states, GetAvailableStates.Request()).available_states}
    say(instruction, scenes["instruction"])
    img, _ = scenes["moving"][0]
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    try:
        # Configure loads the model; the parameter services answer while it does.
        configuring = change.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
        params = get_params.call_async(GetParameters.Request(names=["model_dir"]))
        p.wait_until(lambda: params.done() or configuring.done(), 60, "an answer")
        assert params.done() and not configuring.done(), "get_parameters waited for the model to load"
        assert params.result().values[0].string_value == str(model)
        p.wait_until(lambda: configuring.done() and configuring.result(), 60, "configure")
        assert configuring.result().success and state() == "inactive"
        time.sleep(1.0)  # inactive: a camera and an instruction, and still nothing moves
        assert not moving(peer)
        refused = call(enable, SetBool.Request(data=True))
        assert not refused.success and "activate" in refused.message, refused.message

        # Activate arms.
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
        p.wait_until(lambda: moving(peer), 30, "a moving twist once active")
        # Deactivate stops and goes quiet.
        assert transition(Transition.TRANSITION_DEACTIVATE)
        deactivated = time.monotonic()
        assert state() == "inactive"
        time.sleep(2.0)  # observation window
        after = twists(peer, deactivated)
        assert after and all(is_zero(m) for _, m in after)
        assert max(t for t, _ in after) - deactivated <= 1.0
        # A transition not available here is refused.
        assert not transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_INACTIVE_SHUTDOWN) and state() == "finalized"
        assert not call(transitions, GetAvailableTransitions.Request()).available_transitions
    finally:
        cam.stop()
    goals = [(m.start_state.label, m.goal_state.label) for _, m in peer.messages("moe_vla_node/transition_event")]
    assert goals == [("unconfigured", "configuring"), ("configuring", "inactive"),
                     ("inactive", "activating"), ("activating", "active"),
                     ("active", "deactivating"), ("deactivating", "inactive"),
                     ("inactive", "shuttingdown"), ("shuttingdown", "finalized")], goals
    assert node.alive()


def test_diagnostics_report_camera_inference_and_controller_apart_before_arming(peer, start_node):
    start_node({"start_enabled": None})  # disarmed, the untrained test model, no camera
    peer.subscribe("/diagnostics", DiagnosticArray)

    def statuses():
        for _, msg in reversed(peer.messages("/diagnostics")):
            by_name = {s.name: s for s in msg.status}
            inference = by_name.get("moe_vla_node: inference")
            if inference is not None and "untrained" in inference.message:
                return by_name
        return None

    by_name = p.wait_until(statuses, 30, "diagnostics with the model loaded")
    assert set(by_name) == {"moe_vla_node: camera", "moe_vla_node: inference", "moe_vla_node: controller"}
    camera, inference, controller = (by_name[f"moe_vla_node: {k}"] for k in ("camera", "inference", "controller"))
    assert camera.level == DiagnosticStatus.WARN and "no camera frame" in camera.message
    assert inference.level == DiagnosticStatus.WARN
    assert "disabled" in controller.message
    values = {kv.key: kv.value for kv in controller.values}
    assert values["armed"] == "false" and values["lifecycle_state"] == "active"
    assert {s.hardware_id for s in by_name.values()} == {"/moe_vla_node"}


def test_a_stopped_robot_is_told_to_stand_and_publish_gait_false_sends_none(peer, start_node, scenes):
    start_node(FULL_RANGE)
    _, instruction = connect(peer)
    # An instruction and no camera: a stop that is not idle, so commands keep coming, standing.
    say(instruction, scenes["instruction"])
    gaits = p.wait_until(lambda: peer.messages("gait_command"), 20, "gait commands")
    assert all(m.gait == GaitCommand.STAND for _, m in gaits), [m.gait for _, m in gaits]

    start_node({"publish_gait": False}, name="no_gait", remaps=["__ns:=/velocity_only"])
    peer.wait_publisher("/velocity_only/cmd_vel")
    assert peer.node.count_publishers("/velocity_only/gait_command") == 0
