#!/usr/bin/env python3
"""End-to-end latency of moe_vla_node, measured by a real rclpy peer: a camera frame published ->
the cmd_vel computed from it received, and -> its ~/decision received.

Starts the node on MODEL, sends an instruction, then publishes frames one at a time at --rate
(each the next only after the previous one's decision came back). The node publishes the command
of a new decision at once and then the decision report, so the command for frame i is the last
cmd_vel that arrived before decision i.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/ros"))

import peer as p  # noqa: E402
from std_msgs.msg import String  # noqa: E402


def quantile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second")
    ap.add_argument("--size", default="640x480", help="frame size, rgb8")
    ap.add_argument("--instruction", default=p.INSTRUCTIONS[0])
    ap.add_argument("--threads", type=int, default=0, help="inference_threads parameter")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))

    domain = p.fresh_domain_id()
    log_dir = Path(tempfile.mkdtemp(prefix="moe_vla-latency-"))
    node = p.NodeProcess(log_dir, domain, {"model_dir": str(args.model.resolve()),
                                           "inference_threads": args.threads,
                                           "image_timeout_s": max(0.5, 3.0 / args.rate), "start_enabled": True})
    peer = p.Peer(domain, "moe_vla_latency_peer")
    try:
        camera, instruction = p.drive(peer)
        instruction.publish(String(data=args.instruction))
        msg = p.image_msg(p.picture(width, height, 0))

        to_cmd, to_decision, in_node, lost = [], [], [], 0
        for i in range(args.frames + 5):  # the first five warm up
            start = time.monotonic()
            msg.header.stamp = p.now_stamp(peer.node)
            want = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            camera.publish(msg)

            def decision():
                return [(t, m) for t, m in peer.messages("moe_vla_node/decision", start)
                        if (m.header.stamp.sec, m.header.stamp.nanosec) == want]

            try:
                # Best-effort camera QoS may drop a frame (the first often, while discovery settles).
                got = p.wait_until(decision, 2, f"the decision on frame {i}", poll=0.0005)
            except AssertionError:
                lost += 1
                continue
            t_decision, d = got[0]
            cmds = [t for t, _ in peer.messages("cmd_vel", start) if t <= t_decision]
            if i >= 5 and cmds:
                to_cmd.append((cmds[-1] - start) * 1e3)
                to_decision.append((t_decision - start) * 1e3)
                in_node.append(d.latency_ms)
            time.sleep(max(0.0, start + 1.0 / args.rate - time.monotonic()))
        if not node.alive():
            raise SystemExit(f"moe_vla_node exited:\n{node.log()}")
    finally:
        peer.close()
        node.stop()

    result = {
        "model": str(args.model), "frames": len(to_cmd), "lost": lost, "frame": args.size,
        "image_to_cmd_vel_ms": {"median": quantile(to_cmd, 0.5), "p99": quantile(to_cmd, 0.99)},
        "image_to_decision_ms": {"median": quantile(to_decision, 0.5), "p99": quantile(to_decision, 0.99)},
        "in_node_ms": {"median": quantile(in_node, 0.5), "p99": quantile(in_node, 0.99)},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"end-to-end latency over {len(to_cmd)} frames of {args.size} rgb8 ({args.model}); "
          f"{lost} frames lost in transport:")
    print(f"  {'':28} {'median':>8} {'p99':>8}")
    for key, label in [("image_to_cmd_vel_ms", "image -> cmd_vel received"),
                       ("image_to_decision_ms", "image -> ~/decision received"),
                       ("in_node_ms", "in node (receipt -> decided)")]:
        print(f"  {label:28} {result[key]['median']:7.1f}ms {result[key]['p99']:7.1f}ms")


if __name__ == "__main__":
    main()
