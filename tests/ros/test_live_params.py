"""`ros2 param set` on a running moe_vla_node: limits, rates, timeouts and the instruction take
effect at the next control tick; invalid values and start-up-only parameters (start_enabled among them) are
refused with a reason and change nothing."""

import time

from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter, parameter_value_to_python
from std_srvs.srv import SetBool

import peer as p
from test_node import FULL_RANGE, Camera, connect, is_zero, say, stop_after_moving, twists


class Params:
    """The node's parameter services, as `ros2 param` uses them."""

    def __init__(self, peer):
        self.set_client = peer.node.create_client(SetParameters, "moe_vla_node/set_parameters")
        self.get_client = peer.node.create_client(GetParameters, "moe_vla_node/get_parameters")
        assert self.set_client.wait_for_service(timeout_sec=20)
        assert self.get_client.wait_for_service(timeout_sec=20)

    @staticmethod
    def _call(client, request):
        future = client.call_async(request)
        return p.wait_until(lambda: future.done() and future.result(), 10, "a parameter service response")

    def set(self, **values):
        """Sets each value; returns one (successful, reason) per parameter."""
        request = SetParameters.Request(parameters=[Parameter(n, value=v).to_parameter_msg() for n, v in values.items()])
        return [(r.successful, r.reason) for r in self._call(self.set_client, request).results]

    def get(self, *names):
        values = self._call(self.get_client, GetParameters.Request(names=list(names))).values
        return [parameter_value_to_python(v) for v in values]


def test_a_speed_limit_set_at_run_time_applies_at_the_next_tick(peer, start_node, scenes):
    img, offline = scenes["moving"][0]
    cap = abs(offline["twist"]["x_vel"]) / 2
    rate = 10.0
    start_node(dict(FULL_RANGE, control_rate_hz=rate))
    camera, instruction = connect(peer)
    params = Params(peer)
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if abs(m.linear.x) > cap + 1e-6], 30, "a twist above the new cap")
    assert params.set(min_linear_x=-cap, max_linear_x=cap) == [(True, ""), (True, "")]
    answered = time.monotonic()
    time.sleep(1.0)  # observation window: frames and decisions keep coming
    cam.stop()
    # Every command sent one control period after the answer (plus 50 ms of transport) obeys it.
    later = [m.linear.x for t, m in twists(peer, answered + 1.0 / rate + 0.05)]
    assert later and all(abs(x) <= cap + 1e-6 for x in later), later
    assert any(abs(abs(x) - cap) < 1e-6 for x in later), "still moving, at the new cap"
    assert params.get("max_linear_x", "min_linear_x") == [cap, -cap]


def test_invalid_and_start_up_only_changes_are_refused_with_a_reason(peer, start_node, scenes, model_dir):
    img, _ = scenes["moving"][0]
    node = start_node(dict(FULL_RANGE, model_dir=str(model_dir)))
    camera, instruction = connect(peer)
    params = Params(peer)
    refused = {
        "max_linear_x": -1.0,  # a negative maximum
        "min_body_height": 0.5,  # above max_body_height
        "control_rate_hz": 0.001,  # a tick every 17 minutes would switch the watchdogs off
        "image_timeout_s": "soon",  # wrong type
        "model_dir": "/tmp/another_model",
        "inference_threads": 1,
        "instruction": "go " * 6000,  # over the 16 KiB limit
    }
    for name, value in refused.items():
        [(ok, reason)] = params.set(**{name: value})
        assert not ok and name in reason, (name, reason)
        if name in ("model_dir", "inference_threads"):
            assert "restart" in reason, reason
    old = params.get("max_linear_x", "min_body_height", "control_rate_hz", "image_timeout_s", "model_dir")
    assert old == [FULL_RANGE["max_linear_x"], FULL_RANGE["min_body_height"], 10.0, 0.5, str(model_dir)]
    # Nothing changed for the robot either: it still follows within the old limits.
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    cam.stop()
    assert node.alive()


def test_control_rate_and_image_timeout_change_at_run_time(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    start_node(dict(FULL_RANGE, control_rate_hz=10.0, image_timeout_s=0.5))
    camera, instruction = connect(peer)
    params = Params(peer)

    # An instruction but no camera: a stop that is not idle, so the node keeps publishing zeros,
    # one per control tick.
    say(instruction, scenes["instruction"])

    def rate_over(seconds):
        # No frames, so no decisions: only the control ticks publish, and the count is the control rate.
        start = time.monotonic()
        time.sleep(seconds)
        return len([t for t, _ in twists(peer, start) if t <= start + seconds]) / seconds

    before = rate_over(2.0)
    assert params.set(control_rate_hz=25.0) == [(True, "")]
    time.sleep(0.3)
    after = rate_over(2.0)
    assert 8.0 <= before <= 12.0 and 22.0 <= after <= 28.0, (before, after)

    timeout = 0.9  # longer than the old 0.5 s, shorter than the decision-age limit (1 s)
    assert params.set(image_timeout_s=timeout) == [(True, "")]
    say(instruction, scenes["instruction"])
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist")
    last_frame = cam.stop()
    zero = p.wait_until(lambda: stop_after_moving(peer), 5, "a zero twist")
    # The new timeout, not the old 0.5 s: stopped within timeout + one period (+ 50 ms), not before.
    assert timeout - 0.05 <= zero[0] - last_frame <= timeout + 1.0 / 25.0 + 0.05, zero[0] - last_frame


def test_instruction_set_at_run_time_and_start_enabled_refused(peer, start_node, scenes):
    img, _ = scenes["moving"][0]
    node = start_node(FULL_RANGE)
    camera, _ = connect(peer)
    params = Params(peer)
    cam = Camera(peer, camera, p.image_msg(img), rate_hz=20)
    assert params.set(instruction=scenes["instruction"]) == [(True, "")]
    p.wait_until(lambda: [m for _, m in twists(peer) if not is_zero(m)], 30, "a moving twist from the parameter's instruction")
    # The node publishes a decision's command before its report: wait for the report too.
    decisions = [m for _, m in p.wait_until(lambda: peer.messages("moe_vla_node/decision"), 10, "a decision report")]
    assert decisions and all(d.instruction == scenes["instruction"] for d in decisions)

    # Arming at run time goes through ~/enable (or the lifecycle) only: start_enabled is read at
    # start-up, and a set is refused with the reason.
    (ok, reason), = params.set(start_enabled=False)
    assert not ok and "start-up" in reason, reason
    enable = peer.node.create_client(SetBool, "moe_vla_node/enable")
    assert enable.wait_for_service(timeout_sec=20)

    def call(value):
        future = enable.call_async(SetBool.Request(data=value))
        return p.wait_until(lambda: future.done() and future.result(), 10, "the ~/enable response")

    assert call(False).success
    disabled = time.monotonic()
    time.sleep(0.6)  # frames keep coming: the node must hold the stop
    held = twists(peer, disabled + 0.1)
    assert held and all(is_zero(m) for _, m in held)
    assert call(True).success
    enabled = time.monotonic()
    p.wait_until(lambda: [m for _, m in twists(peer, enabled) if not is_zero(m)], 10, "commands to resume")

    assert params.set(instruction="") == [(True, "")]
    cleared = time.monotonic()
    time.sleep(0.6)
    cam.stop()
    stopped = twists(peer, cleared + 0.1)
    assert stopped and all(is_zero(m) for _, m in stopped)
    assert "instruction parameter cleared" in node.log()
