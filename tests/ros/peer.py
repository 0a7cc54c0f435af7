"""A real rclpy peer for moe_vla_node: starts the node, publishes frames and instructions,
records what comes back. Used by the tests and by scripts/latency.py."""

import itertools
import os
import random
import signal
import struct
import subprocess
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

# Participants on one host, found without multicast: on the CI machines, multicast discovery now
# and then never connected a peer and its node (about one test in 100 timed out after 20 s; with
# LARGE_DATA's ephemeral unicast ports a static peer cannot help). LOCALHOST announces by unicast
# to localhost's well-known ports. rmw_fastrtps then chooses the transports itself (shared memory
# and UDP), so FASTDDS_BUILTIN_TRANSPORTS below only counts where a run sets another range.
# Both are set before any participant exists, for the peer and the nodes it starts.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Fast DDS's default transports lose best-effort samples larger than its shared-memory segment
# (a 640x480 rgb8 frame is 900 KB) on one host; LARGE_DATA is its documented fix (docs/node.md,
# "Large raw images and Fast DDS").
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")

import numpy as np  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from moe_vla_msgs.msg import VlaDecision  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = [
    line.strip()
    for line in (ROOT / "data/instructions.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
INSTRUCTION_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)

# moe_vla_sim_node keeps its last 100 episode outcomes for subscribers that join late.
OUTCOME_QOS = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)

# Frame size for the behaviour tests (the flood test and the latency script use full VGA).
WIDTH, HEIGHT = 160, 120

_domains = itertools.count(random.Random(os.getpid()).randrange(1, 120))


def fresh_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test of this run uses, within 1..=101: above 101 the DDS ports of a
    domain reach Linux's ephemeral port range, where they can collide and discovery then fails
    now and then."""
    return next(_domains) % 101 + 1


def installed(binary: str) -> Path:
    """A binary of the installed package: `colcon test` names its install tree in MOE_VLA_BIN_DIR,
    scripts/setup.sh installs into the checkout."""
    path = Path(os.environ.get("MOE_VLA_BIN_DIR") or ROOT / "install/moe_vla/lib/moe_vla") / binary
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/setup.sh")
    return path


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic test picture: smooth colour gradients plus a bright block."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 127 + 120 * np.sin(a * x / width * 6 + b * y / height * 6 + p * 3)
    x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
    img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.uniform(0, 255, 3)
    return img.clip(0, 255).astype(np.uint8)


def png(img: np.ndarray) -> bytes:
    """Encodes an HxWx3 uint8 array as PNG (stdlib only)."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_msg(img: np.ndarray, encoding: str = "rgb8") -> Image:
    msg = Image()
    msg.height, msg.width = img.shape[0], img.shape[1]
    msg.encoding = encoding
    msg.step = img.shape[1] * (img.shape[2] if img.ndim == 3 else 1)
    msg.data = img.tobytes()
    return msg


def string_cdr(data: bytes) -> bytes:
    """A serialized std_msgs/String holding arbitrary bytes (rclpy would refuse invalid UTF-8)."""
    body = struct.pack("<I", len(data) + 1) + data + b"\x00"
    return b"\x00\x01\x00\x00" + body


def now_stamp(node) -> "builtin_interfaces.msg.Time":
    return node.get_clock().now().to_msg()


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def wait_until(predicate, timeout: float, what: str, poll: float = 0.01):
    """Polls `predicate` until it is true; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll)


class NodeProcess:
    """moe_vla_node (or another of the package's nodes) as a subprocess, its console log in a file."""

    def __init__(self, log_dir: Path, domain_id: int, params: dict, remaps=(), name="node", extra_args=(),
                 binary="moe_vla_node"):
        self.log_path = Path(log_dir) / f"{name}.log"
        # Extra arguments (a --params-file) first: a later -p overrides them, as in every ROS 2 node.
        args = [str(installed(binary)), "--ros-args", *extra_args]
        for key, value in params.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            args += ["-p", f"{key}:={value}"]
        for remap in remaps:
            args += ["-r", remap]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), RCUTILS_COLORIZED_OUTPUT="0",
                   RCUTILS_LOGGING_BUFFERED_STREAM="0")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


class Peer:
    """An rclpy node in its own context and domain, spun on a background thread; every message
    it receives is kept with its monotonic arrival time."""

    def __init__(self, domain_id: int, name: str = "moe_vla_test_peer"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received = defaultdict(list)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def subscribe(self, topic: str, msg_type, qos=10):
        def keep(msg, topic=topic):
            with self.lock:
                self.received[topic].append((time.monotonic(), msg))

        return self.node.create_subscription(msg_type, topic, keep, qos)

    def messages(self, topic: str, since: float = 0.0):
        """(arrival, message) pairs received on `topic` at or after `since`."""
        with self.lock:
            return [(t, m) for t, m in self.received[topic] if t >= since]

    def publisher(self, topic: str, msg_type, qos=10):
        return self.node.create_publisher(msg_type, topic, qos)

    def camera(self, topic="camera/image_raw", compressed=False):
        return self.publisher(topic, CompressedImage if compressed else Image, qos_profile_sensor_data)

    def instruction_publisher(self, topic="instruction"):
        return self.publisher(topic, String, INSTRUCTION_QOS)

    def wait_matched(self, publisher, timeout=20.0):
        self._wait_discovered(lambda: publisher.get_subscription_count() > 0, timeout,
                              f"a subscriber on {publisher.topic_name}")

    def wait_publisher(self, topic: str, timeout=20.0):
        self._wait_discovered(lambda: self.node.count_publishers(topic) > 0, timeout, f"a publisher on {topic}")

    def _wait_discovered(self, predicate, timeout: float, what: str):
        """`wait_until`, failing with the nodes this peer does see: whether discovery or the
        endpoint is missing."""
        try:
            wait_until(predicate, timeout, what)
        except AssertionError as e:
            seen = [f"{ns.rstrip('/')}/{name}" for name, ns in self.node.get_node_names_and_namespaces()]
            raise AssertionError(f"{e}; this peer sees the nodes {seen}") from None

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)


def drive(peer: "Peer", timeout: float = 60.0):
    """A camera and an instruction publisher for a node, and subscriptions to its cmd_vel and
    ~/decision; waits until the node and the peer see each other."""
    camera, instruction = peer.camera(), peer.instruction_publisher()
    peer.subscribe("cmd_vel", Twist)
    peer.subscribe("moe_vla_node/decision", VlaDecision)
    peer.wait_matched(camera, timeout=timeout)
    peer.wait_matched(instruction, timeout=timeout)
    peer.wait_publisher("cmd_vel")
    return camera, instruction


def compressed_msg(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = data
    return msg


def offline_decision(model_dir: Path, img: np.ndarray, instruction: str, tmp: Path) -> dict:
    """What `moe_vla decide` (policy::Policy, no ROS) computes for a picture and instruction."""
    import json

    path = Path(tmp) / f"frame-{abs(hash(img.tobytes()))}.png"
    path.write_bytes(png(img))
    out = subprocess.run(
        [str(installed("moe_vla")), "decide", str(model_dir), "--image", str(path),
         "--instruction", instruction, "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)
