#!/usr/bin/env python3
"""Soak test of moe_vla_node (not part of CI): the node on MODEL under a 30 fps VGA camera for
--minutes, the instruction changed every --instruction-every seconds and the camera paused for
--gap seconds every --gap-every seconds. Every --sample seconds it records the node's RSS, the
decision latency (the node's own `latency_ms`: frame received -> decided) and the command rate.

At the end it reports RSS growth, latency median and p99 over the first and the last five minutes,
commands missed (an interval between two cmd_vel longer than 1.5 control periods; commands go out
at every tick, stopped or not) and, for each camera gap, whether the node stopped: every command from image_timeout_s +
one control period (+ 50 ms) after the last frame until frames resumed must be a zero twist.

Run: source scripts/ros_env.sh && python3 scripts/soak.py [MODEL] [--minutes 30] [--json]
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/ros"))

import peer as p  # noqa: E402
from std_msgs.msg import String  # noqa: E402

CONTROL_RATE_HZ = 10.0
IMAGE_TIMEOUT_S = 0.5


def nearest_rank(values, q):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))] if s else float("nan")


class Camera(threading.Thread):
    """Publishes VGA frames at `fps`, pausing when told; remembers every pause as (last frame, resumed)."""

    def __init__(self, peer, publisher, fps, size):
        super().__init__(daemon=True)
        self.peer, self.publisher, self.period = peer, publisher, 1.0 / fps
        width, height = size
        self.frames = [p.image_msg(p.picture(width, height, seed)) for seed in range(4)]
        self.sent, self.last_sent = 0, None
        self.gaps = []
        self._pause_until = 0.0
        self._stopping = threading.Event()

    def pause(self, seconds):
        self._pause_until = time.monotonic() + seconds

    def run(self):
        next_time = time.monotonic()
        paused_at = None
        while not self._stopping.is_set():
            now = time.monotonic()
            if now < self._pause_until:
                paused_at = paused_at or self.last_sent
            else:
                if paused_at is not None:
                    self.gaps.append((paused_at, now))
                    paused_at = None
                msg = self.frames[(self.sent // 30) % len(self.frames)]  # a new picture every second
                msg.header.stamp = p.now_stamp(self.peer.node)
                self.publisher.publish(msg)
                self.last_sent = time.monotonic()
                self.sent += 1
            next_time += self.period
            self._stopping.wait(max(0.0, next_time - time.monotonic()))

    def stop(self):
        self._stopping.set()
        self.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, nargs="?", default=p.ROOT / "models/default")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--instruction-every", type=float, default=20.0)
    ap.add_argument("--gap-every", type=float, default=60.0)
    ap.add_argument("--gap", type=float, default=1.5, help="camera pause, s (longer than image_timeout_s)")
    ap.add_argument("--sample", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = tuple(map(int, args.size.split("x")))

    domain = p.fresh_domain_id()
    log_dir = Path(tempfile.mkdtemp(prefix="moe_vla-soak-"))
    node = p.NodeProcess(log_dir, domain, {"model_dir": str(args.model.resolve()), "control_rate_hz": CONTROL_RATE_HZ,
                                           "image_timeout_s": IMAGE_TIMEOUT_S, "start_enabled": True})
    peer = p.Peer(domain, "moe_vla_soak_peer")
    samples = []
    try:
        camera_pub, instruction = p.drive(peer)
        instructions = p.INSTRUCTIONS
        camera = Camera(peer, camera_pub, args.fps, size)
        camera.start()
        start = time.monotonic()
        end = start + args.minutes * 60.0
        next_instruction = next_gap = next_sample = start
        said = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_instruction:
                instruction.publish(String(data=instructions[said % len(instructions)]))
                said += 1
                next_instruction += args.instruction_every
            if now >= next_gap + args.gap_every:
                camera.pause(args.gap)
                next_gap += args.gap_every
            if now >= next_sample + args.sample:
                window = [m.latency_ms for _, m in peer.messages("moe_vla_node/decision", next_sample)]
                cmds = len(peer.messages("cmd_vel", next_sample))
                samples.append({"t": now - start, "rss_mb": node.rss_mb(), "decisions": len(window),
                                "cmd_per_s": cmds / (now - next_sample), "latency_ms": window})
                next_sample = now
                if not node.alive():
                    raise SystemExit(f"moe_vla_node exited:\n{node.log()}")
            time.sleep(0.05)
        camera.stop()
        cmds = [t for t, _ in peer.messages("cmd_vel", start)]
        twists = peer.messages("cmd_vel", start)
    finally:
        peer.close()
        node.stop()

    period = 1.0 / CONTROL_RATE_HZ
    # Commands go out at every tick, stopped or not, so every interval counts.
    missed = sum(1 for t0, t1 in zip(cmds, cmds[1:]) if t1 - t0 > 1.5 * period)
    gap_results = []
    for last_frame, resumed in camera.gaps:
        window = [m for t, m in twists if last_frame + IMAGE_TIMEOUT_S + period + 0.05 <= t < resumed]
        stopped = bool(window) and all(m.linear.x == 0 and m.linear.y == 0 and m.angular.z == 0 for m in window)
        gap_results.append({"last_frame_s": last_frame - start, "commands_in_gap": len(window), "stopped": stopped})

    def latency(samples_in):
        values = [v for s in samples_in for v in s["latency_ms"]]
        return {"median": nearest_rank(values, 0.5), "p99": nearest_rank(values, 0.99), "n": len(values)}

    five = 300.0
    first = [s for s in samples if s["t"] <= five]
    last = [s for s in samples if s["t"] > samples[-1]["t"] - five]
    rss = [s["rss_mb"] for s in samples]
    result = {
        "model": str(args.model), "minutes": args.minutes, "fps": args.fps, "frame": args.size,
        "frames_sent": camera.sent, "instructions": said, "commands": len(cmds),
        "rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss), "growth": rss[-1] - rss[0]},
        "latency_first_5_min_ms": latency(first), "latency_last_5_min_ms": latency(last),
        "command_rate_per_s": {"min": min(s["cmd_per_s"] for s in samples), "max": max(s["cmd_per_s"] for s in samples)},
        "commands_missed": missed, "camera_gaps": len(gap_results),
        "gaps_that_stopped": sum(g["stopped"] for g in gap_results),
        "samples": [{k: v for k, v in s.items() if k != "latency_ms"} for s in samples],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"soak: {args.minutes:g} min, {camera.sent} frames of {args.size} at {args.fps:.0f} fps, "
          f"{said} instructions, {len(cmds)} commands ({args.model})")
    r = result["rss_mb"]
    print(f"  RSS             {r['first']:.0f} MB -> {r['last']:.0f} MB (max {r['max']:.0f}, growth {r['growth']:+.0f} MB)")
    for key, label in [("latency_first_5_min_ms", "latency, first 5 min"), ("latency_last_5_min_ms", "latency, last 5 min")]:
        print(f"  {label:15} median {result[key]['median']:.1f} ms, p99 {result[key]['p99']:.1f} ms "
              f"({result[key]['n']} decisions)")
    print(f"  command rate    {result['command_rate_per_s']['min']:.1f}-{result['command_rate_per_s']['max']:.1f} /s; "
          f"{missed} intervals over 1.5 control periods")
    print(f"  camera gaps     {result['gaps_that_stopped']} of {len(gap_results)} produced a stop")


if __name__ == "__main__":
    main()
