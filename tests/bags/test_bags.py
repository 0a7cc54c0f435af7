"""rosbag2 MCAP interoperability with third-party tools (rosbags; mcap + mcap-ros2-support) and
replay through the node's controller."""

import json
import zlib

import numpy as np
import pytest
from bagtools import echo, moe_vla
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as McapRos2Writer
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

import peer as p

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC


def stamp(ns):
    return T["builtin_interfaces/msg/Time"](sec=ns // SEC, nanosec=ns % SEC)


def header(ns, frame="cam"):
    return T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame)


def image(ns, img, encoding="rgb8"):
    h, w = img.shape[:2]
    return T["sensor_msgs/msg/Image"](header=header(ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=img.shape[1] * (img.shape[2] if img.ndim == 3 else 1),
                                      data=np.frombuffer(img.tobytes(), np.uint8))


def vec3(x, y, z):
    return T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)


def twist(x, yaw):
    return T["geometry_msgs/msg/Twist"](linear=vec3(x, 0.25, 0.0), angular=vec3(0.0, 0.0, yaw))


def write_rosbags(path, messages):
    """messages: (topic, type, log time, message) in order."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for topic, typ, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, typ, typestore=STORE)
            writer.write(conns[topic], t, STORE.serialize_cdr(msg, typ))


def crc(data) -> int:
    return zlib.crc32(bytes(data))


def test_reads_what_rosbags_wrote(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    jpeg = T["sensor_msgs/msg/CompressedImage"](header=header(T0 + 7), format="jpeg",
                                                data=np.frombuffer(b"\xff\xd8 not really a jpeg", np.uint8))
    messages = [("/camera/image_raw", "sensor_msgs/msg/Image", T0 + i * SEC // 10, image(T0 + i * 7, f))
                for i, f in enumerate(frames)]
    messages += [
        ("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", T0 + 5, jpeg),
        ("/instruction", "std_msgs/msg/String", T0 + 1, T["std_msgs/msg/String"](data="go to the red ball ü")),
        ("/cmd_vel", "geometry_msgs/msg/Twist", T0 + 2, twist(0.5, -0.125)),
        ("/cmd_vel", "geometry_msgs/msg/Twist", T0 + 3, twist(-1e-9, 1e300)),
        ("/stamped", "geometry_msgs/msg/TwistStamped", T0 + 4,
         T["geometry_msgs/msg/TwistStamped"](header=header(T0 + 4, "base"), twist=twist(1.5, 0.0))),
        ("/battery", "std_msgs/msg/Int32", T0 + 6, T["std_msgs/msg/Int32"](data=87)),
    ]
    messages.sort(key=lambda m: m[2])
    write_rosbags(tmp_path / "bag", messages)

    info = moe_vla("bag", "info", tmp_path / "bag").stdout
    assert "Messages:          9" in info
    for topic, typ, count in [("/camera/image_raw", "sensor_msgs/msg/Image", 3), ("/cmd_vel", "geometry_msgs/msg/Twist", 2),
                              ("/battery", "std_msgs/msg/Int32", 1)]:
        line = next(line for line in info.splitlines() if f"Topic: {topic} " in line)
        assert f"Type: {typ}" in line and f"Count: {count} " in line and "Serialization Format: cdr" in line

    got = echo(tmp_path / "bag")
    assert len(got) == 9  # every type, from the definitions the bag carries
    by_topic = {}
    for m in got:
        by_topic.setdefault(m["topic"], []).append(m)
    for m, (_, _, t, want) in zip(by_topic["/camera/image_raw"], [x for x in messages if x[0] == "/camera/image_raw"]):
        msg = m["msg"]
        assert m["log_time"] == t and m["type"] == "sensor_msgs/msg/Image"
        assert (msg["height"], msg["width"], msg["step"], msg["encoding"]) == (48, 64, 192, "rgb8")
        assert msg["header"]["stamp"] == {"sec": want.header.stamp.sec, "nanosec": want.header.stamp.nanosec}
        assert msg["data"] == {"len": 48 * 64 * 3, "crc32": crc(want.data)}
    assert by_topic["/instruction"][0]["msg"]["data"] == "go to the red ball ü"
    assert [m["msg"]["linear"]["x"] for m in by_topic["/cmd_vel"]] == [0.5, -1e-9]
    assert [m["msg"]["angular"]["z"] for m in by_topic["/cmd_vel"]] == [-0.125, 1e300]
    stamped = by_topic["/stamped"][0]["msg"]
    assert stamped["header"]["frame_id"] == "base" and stamped["twist"]["linear"] == {"x": 1.5, "y": 0.25, "z": 0.0}
    compressed = by_topic["/camera/image_raw/compressed"][0]["msg"]
    # Byte arrays of up to 64 bytes print as they are.
    assert compressed["format"] == "jpeg" and compressed["data"] == list(jpeg.data)
    assert by_topic["/battery"][0]["msg"] == {"data": 87}


# Definitions as rosbag2 stores them, written out here independently of moe_vla's.
TIME_DEF = "int32 sec\nuint32 nanosec"
HEADER_DEF = "builtin_interfaces/Time stamp\nstring frame_id"
SEP = "\n" + "=" * 80 + "\n"
IMAGE_DEF = ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\n"
             "uint32 step\nuint8[] data" + SEP + "MSG: std_msgs/Header\n" + HEADER_DEF + SEP
             + "MSG: builtin_interfaces/Time\n" + TIME_DEF)
TWIST_DEF = ("Vector3 linear\nVector3 angular" + SEP + "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z")


def test_reads_a_bare_mcap_from_mcap_ros2(tmp_path):
    path = tmp_path / "plain.mcap"
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    with open(path, "wb") as f:
        w = McapRos2Writer(f)
        s_img = w.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        s_str = w.register_msgdef("std_msgs/msg/String", "string data")
        s_twist = w.register_msgdef("geometry_msgs/msg/Twist", TWIST_DEF)
        w.write_message("/instruction", s_str, {"data": "crawl under the bar"}, log_time=T0)
        w.write_message("/camera/image_raw", s_img, {
            "header": {"stamp": {"sec": 12, "nanosec": 34}, "frame_id": "cam"}, "height": 4, "width": 6,
            "encoding": "bgr8", "is_bigendian": 0, "step": 18, "data": img.tobytes()}, log_time=T0 + 10)
        w.write_message("/cmd_vel", s_twist, {"linear": {"x": 0.75, "y": 0.0, "z": 0.0},
                                              "angular": {"x": 0.0, "y": 0.0, "z": -0.5}}, log_time=T0 + 20)
        w.finish()
    got = {m["topic"]: m for m in echo(path)}
    assert got["/instruction"]["msg"]["data"] == "crawl under the bar"
    msg = got["/camera/image_raw"]["msg"]
    assert msg["header"] == {"stamp": {"sec": 12, "nanosec": 34}, "frame_id": "cam"}
    assert (msg["encoding"], msg["step"], msg["data"]) == ("bgr8", 18, {"len": 72, "crc32": crc(img.tobytes())})
    assert got["/cmd_vel"]["msg"]["angular"]["z"] == -0.5 and got["/cmd_vel"]["log_time"] == T0 + 20


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory, model_dir):
    """A camera bag: frames at 10 Hz for 1 s, a 1 s gap, frames for 1 s more; an instruction first.
    The picture is one the (untrained) model moves on, looked up offline."""
    tmp = tmp_path_factory.mktemp("drive")
    instruction = p.INSTRUCTIONS[0]
    for seed in range(40):
        img = p.picture(96, 72, seed)
        offline = p.offline_decision(model_dir, img, instruction, tmp)
        if not offline["terminate"] and abs(offline["twist"]["x_vel"]) > 0.05:
            break
    else:
        raise AssertionError("no picture makes the model move")
    times = [T0 + SEC // 20 + i * SEC // 10 for i in range(10)] + [T0 + 2 * SEC + i * SEC // 10 for i in range(10)]
    messages = [("/instruction", "std_msgs/msg/String", T0, T["std_msgs/msg/String"](data=instruction))]
    messages += [("/camera/image_raw", "sensor_msgs/msg/Image", t, image(t - 1000, img)) for t in times]
    messages.append(("/battery", "std_msgs/msg/Int32", T0 + 3, T["std_msgs/msg/Int32"](data=87)))
    messages.sort(key=lambda m: m[2])
    write_rosbags(tmp / "in", messages)
    return {"bag": tmp / "in", "offline": offline, "times": times, "tmp": tmp}


def replay(drive_bag, model_dir, name, *extra):
    out = drive_bag["tmp"] / name
    result = moe_vla("replay", "--bag", drive_bag["bag"], "--model", model_dir, "--out", out, "--json", *extra)
    return out, json.loads(result.stdout)


def test_replay_runs_the_controller_on_bag_time(drive_bag, model_dir):
    out, summary = replay(drive_bag, model_dir, "out")
    assert summary["frames"] == 20 and summary["decisions"] == 20 and summary["failed_decisions"] == 0
    assert summary["skipped"] == {"/battery (std_msgs/msg/Int32)": 1}
    assert summary["stops"]["stale_frame"] == 2  # in the gap and after the last frame
    decisions = echo(out, "/moe_vla_node/decision")
    offline = drive_bag["offline"]
    assert decisions[0]["msg"]["bins"] == offline["bins"]
    assert [np.float32(v) for v in decisions[0]["msg"]["values"]] == [np.float32(v) for v in offline["values"]]
    # Decision stamps are the frames' own stamps.
    assert decisions[0]["msg"]["header"]["stamp"]["nanosec"] == (drive_bag["times"][0] - 1000) % SEC
    cmds = [(m["log_time"], m["msg"]) for m in echo(out, "/cmd_vel")]
    last_before_gap = drive_bag["times"][9]
    timeout, period = 0.5 * SEC, SEC // 10
    moving = [t for t, m in cmds if m["linear"]["x"] != 0.0]
    assert moving and min(moving) >= drive_bag["times"][0]
    zero_in_gap = [t for t, m in cmds if last_before_gap < t < drive_bag["times"][10] and m["linear"]["x"] == 0.0]
    assert zero_in_gap and zero_in_gap[0] - last_before_gap <= timeout + period
    assert all(m["linear"]["x"] != 0.0 for t, m in cmds if last_before_gap < t <= last_before_gap + timeout)
    # Acceleration limit of the default parameters: 1 m/s^2.
    for (t0, a), (t1, b) in zip(cmds, cmds[1:]):
        if a["linear"]["x"] != 0.0 and b["linear"]["x"] != 0.0:
            assert abs(b["linear"]["x"] - a["linear"]["x"]) <= 1.0 * (t1 - t0) / SEC + 1e-6
    # Control ticks at 10 Hz on bag time, plus one at each decision.
    assert len(cmds) >= 30


def test_replay_is_byte_identical(drive_bag, model_dir):
    a, _ = replay(drive_bag, model_dir, "a")
    b, _ = replay(drive_bag, model_dir, "b", "--threads", "1")
    files_a = sorted(x.name for x in a.iterdir())
    assert files_a == ["a_0.mcap", "metadata.yaml"]
    assert (a / "a_0.mcap").read_bytes() == (b / "b_0.mcap").read_bytes()
    assert (a / "metadata.yaml").read_text().replace("a_0", "b_0") == (b / "metadata.yaml").read_text()


def test_replay_output_reads_back_in_rosbags_and_mcap_ros2(drive_bag, model_dir):
    out, _ = replay(drive_bag, model_dir, "third_party")
    ours = {}
    for m in echo(out):
        ours.setdefault(m["topic"], []).append(m)
    want_types = {"/cmd_vel": "geometry_msgs/msg/Twist", "/gait_command": "moe_vla_msgs/msg/GaitCommand",
                  "/moe_vla_node/decision": "moe_vla_msgs/msg/VlaDecision", "/instruction": "std_msgs/msg/String",
                  "/moe_vla/replay/frames": "std_msgs/msg/Header"}

    # rosbags: metadata.yaml, QoS, and the schemas carried in the MCAP for our own message types.
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(out) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == want_types
        for c in reader.connections:
            assert c.ext.serialization_format == "cdr" and c.ext.offered_qos_profiles
            if c.msgtype.startswith("moe_vla_msgs/"):
                store.register(get_types_from_msg(c.msgdef.data, c.msgtype))
        theirs = {}
        for c, t, raw in reader.messages():
            theirs.setdefault(c.topic, []).append((t, store.deserialize_cdr(raw, c.msgtype)))
    assert {k: len(v) for k, v in theirs.items()} == {k: len(v) for k, v in ours.items()}
    for (t, msg), m in zip(theirs["/cmd_vel"], ours["/cmd_vel"]):
        assert t == m["log_time"] and msg.linear.x == m["msg"]["linear"]["x"] and msg.angular.z == m["msg"]["angular"]["z"]
    for (_, msg), m in zip(theirs["/moe_vla_node/decision"], ours["/moe_vla_node/decision"]):
        d = m["msg"]
        assert list(msg.bins) == d["bins"] and list(msg.dimension_names) == d["dimension_names"]
        assert [np.float32(v) for v in msg.q_values] == [np.float32(v) for v in d["q_values"]]
        assert msg.terminate == d["terminate"] and msg.model_id == d["model_id"] == "tiny"
    for (_, msg), m in zip(theirs["/gait_command"], ours["/gait_command"]):
        g = m["msg"]
        assert msg.gait == g["gait"] and [np.float32(v) for v in msg.phase_offsets] == [np.float32(v) for v in g["phase_offsets"]]
        assert np.float32(msg.step_frequency) == np.float32(g["step_frequency"])

    # mcap + mcap-ros2-support: decodes every message from the schema text alone.
    with open(out / "third_party_0.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = list(reader.iter_decoded_messages())
    assert len(decoded) == sum(len(v) for v in ours.values())
    for schema, channel, message, msg in decoded:
        assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
        assert schema.name == want_types[channel.topic]
        assert "offered_qos_profiles" in channel.metadata
    decisions = [msg for s, c, m, msg in decoded if c.topic == "/moe_vla_node/decision"]
    assert [list(d.bins) for d in decisions] == [m["msg"]["bins"] for m in ours["/moe_vla_node/decision"]]


def test_damaged_bags_are_read_as_far_as_they_go(drive_bag, model_dir, tmp_path):
    # Small chunks, so that damage part-way leaves whole chunks before it.
    path = tmp_path / "chunked.mcap"
    img = p.picture(96, 72, 5)
    with open(path, "wb") as f:
        w = McapRos2Writer(f, chunk_size=8192)
        s_img = w.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        s_str = w.register_msgdef("std_msgs/msg/String", "string data")
        w.write_message("/instruction", s_str, {"data": p.INSTRUCTIONS[0]}, log_time=T0)
        for i in range(20):
            w.write_message("/camera/image_raw", s_img, {
                "header": {"stamp": {"sec": 1, "nanosec": i}, "frame_id": "cam"}, "height": 72, "width": 96,
                "encoding": "rgb8", "is_bigendian": 0, "step": 288, "data": img.tobytes()},
                log_time=T0 + (i + 1) * SEC // 10)
        w.finish()
    data = path.read_bytes()

    def messages(info):
        return int(next(line for line in info.splitlines() if line.startswith("Messages:")).split()[1])

    assert messages(moe_vla("bag", "info", path).stdout) == 21

    truncated = tmp_path / "truncated.mcap"
    truncated.write_bytes(data[: len(data) * 6 // 10])
    info = moe_vla("bag", "info", truncated).stdout
    assert "DAMAGED" in info and "stopped after" in info
    assert 5 < messages(info) < 21

    corrupt = tmp_path / "corrupt.mcap"
    middle = len(data) // 2
    corrupt.write_bytes(data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 64]) + data[middle + 64 :])
    info = moe_vla("bag", "info", corrupt)
    assert info.returncode == 0 and "DAMAGED" in info.stdout
    assert 5 < messages(info.stdout) < 21

    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"this is not a bag" * 10)
    info = moe_vla("bag", "info", garbage)
    assert info.returncode == 0 and "not an MCAP file" in info.stdout

    _, summary = replay({**drive_bag, "bag": truncated}, model_dir, "from_truncated")
    assert summary["damage"] and 5 < summary["frames"] < 20 and summary["decisions"] == summary["frames"]
