"""rosbag2's sqlite3 storage (as Humble records by default, and as Jazzy does with message
definitions) read by bag info, bag echo, replay and train; bag echo on message types moe_vla
has no code for, written by rosbags and by mcap-ros2-support."""

import json
import sqlite3
import zlib

import numpy as np
import pytest
from bagtools import ROOT, echo, moe_vla
from mcap_ros2.writer import Writer as McapRos2Writer
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

import peer as p

STORE = get_typestore(Stores.ROS2_JAZZY)
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
OUTCOME = "moe_vla_msgs/msg/EpisodeOutcome"
STORE.register(get_types_from_msg((ROOT / "moe_vla_msgs/msg/EpisodeOutcome.msg").read_text(), OUTCOME))
# A type with every field shape: constants, bounded string and sequence, fixed arrays, a string
# sequence, a double after a single byte (padding), nested messages, a long and a short byte array.
SHAPES = "test_msgs/msg/Shapes"
SHAPES_DEF = ("uint8 KIND=3  # a constant\nstring<=10 label\nint32[<=5] small\nfloat64[3] xyz\nstring[] tags\n"
              "uint8 flag\nfloat64 after_flag\ngeometry_msgs/Point[] points\nuint8[] blob\nuint8[4] short_blob\nbool ok\n")
STORE.register(get_types_from_msg(SHAPES_DEF, SHAPES))
T = STORE.types


def crc(data) -> int:
    return zlib.crc32(bytes(data))


def stamp(ns):
    return T["builtin_interfaces/msg/Time"](sec=ns // SEC, nanosec=ns % SEC)


def header(ns, frame="cam"):
    return T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame)


def write_bag(path, messages, storage):
    """messages: (topic, type, log time, message) in order."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns = {}
        for topic, typ, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, typ, typestore=STORE)
            writer.write(conns[topic], t, STORE.serialize_cdr(msg, typ))


def as_humble(path):
    """What Humble records: no message_definitions table, metadata version 5."""
    db = sqlite3.connect(path / f"{path.name}.db3")
    db.execute("DROP TABLE message_definitions")
    db.commit()
    db.close()
    meta = path / "metadata.yaml"
    meta.write_text(meta.read_text().replace("version: 9", "version: 5"))


def episode(picture, instruction, frames=6):
    """A recorded episode: the instruction, camera frames each followed by a command, the outcome."""
    h, w = picture.shape[:2]
    messages = [("/instruction", "std_msgs/msg/String", T0, T["std_msgs/msg/String"](data=instruction))]
    for i in range(frames):
        t = T0 + (i + 1) * SEC // 10
        img = T["sensor_msgs/msg/Image"](header=header(t), height=h, width=w, encoding="rgb8", is_bigendian=0,
                                         step=w * 3, data=np.frombuffer(picture.tobytes(), np.uint8))
        cmd = T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.5, y=0.0, z=0.0),
                                           angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=-0.25 * i))
        messages += [("/camera/image_raw", "sensor_msgs/msg/Image", t, img),
                     ("/cmd_vel", "geometry_msgs/msg/Twist", t + 1000, cmd)]
    messages.append(("/moe_vla/episode", OUTCOME, T0 + SEC, T[OUTCOME](
        header=header(T0 + SEC, ""), family="go_to", instruction=instruction, success=True, reason="reached",
        terminated=True, steps=frames, seed=3, held_out=False)))
    messages.append(("/battery", "std_msgs/msg/Int32", T0 + 2 * SEC, T["std_msgs/msg/Int32"](data=87)))
    return messages


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def sqlite_episode(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"sqlite_{request.param}")
    picture = p.picture(96, 72, 1)
    bag = tmp / "data" / "episode"
    bag.parent.mkdir()
    write_bag(bag, episode(picture, p.INSTRUCTIONS[0]), StoragePlugin.SQLITE3)
    if request.param == "humble":
        as_humble(bag)
    return {"distro": request.param, "bag": bag, "picture": picture, "tmp": tmp}


def test_sqlite3_bags_list_and_echo(sqlite_episode):
    bag = sqlite_episode["bag"]
    assert sorted(x.name for x in bag.iterdir()) == ["episode.db3", "metadata.yaml"]
    info = moe_vla("bag", "info", bag).stdout
    assert "Storage id:        sqlite3" in info and "Messages:          15" in info and "DAMAGED" not in info
    for topic, typ, count in [("/camera/image_raw", "sensor_msgs/msg/Image", 6), ("/cmd_vel", "geometry_msgs/msg/Twist", 6),
                              ("/instruction", "std_msgs/msg/String", 1), ("/moe_vla/episode", OUTCOME, 1),
                              ("/battery", "std_msgs/msg/Int32", 1)]:
        line = next(line for line in info.splitlines() if f"Topic: {topic} " in line)
        assert f"Type: {typ} " in line and f"Count: {count} " in line

    result = moe_vla("bag", "echo", bag)
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [m["log_time"] for m in got] == sorted(m["log_time"] for m in got)
    by_topic = {}
    for m in got:
        by_topic.setdefault(m["topic"], []).append(m["msg"])
    assert by_topic["/instruction"] == [{"data": p.INSTRUCTIONS[0]}]
    picture = sqlite_episode["picture"]
    for i, img in enumerate(by_topic["/camera/image_raw"]):
        t = T0 + (i + 1) * SEC // 10
        assert img["header"] == {"stamp": {"sec": t // SEC, "nanosec": t % SEC}, "frame_id": "cam"}
        assert (img["width"], img["height"], img["step"], img["encoding"]) == (96, 72, 288, "rgb8")
        assert img["data"] == {"len": picture.size, "crc32": crc(picture.tobytes())}
    assert [c["angular"]["z"] for c in by_topic["/cmd_vel"]] == [-0.25 * i for i in range(6)]
    outcome = by_topic["/moe_vla/episode"][0]
    assert (outcome["family"], outcome["success"], outcome["steps"], outcome["seed"]) == ("go_to", True, 6, 3)
    if sqlite_episode["distro"] == "jazzy":
        # Every message, Int32 decoded from the definition in the file.
        assert len(got) == 15 and by_topic["/battery"] == [{"data": 87}]
    else:
        # Humble bags carry no definitions: moe_vla's own types decode, the rest is named.
        assert len(got) == 14 and "/battery" not in by_topic
        assert "skipped 1 messages" in result.stderr and "std_msgs/msg/Int32 (1: the bag carries no definition" in result.stderr


def test_sqlite3_bags_replay(sqlite_episode, model_dir):
    out = sqlite_episode["tmp"] / "replayed"
    result = moe_vla("replay", "--bag", sqlite_episode["bag"], "--model", model_dir, "--out", out, "--json")
    summary = json.loads(result.stdout)
    assert summary["frames"] == 6 and summary["decisions"] == 6 and summary["failed_decisions"] == 0
    assert not summary["damage"]
    decisions = echo(out, "/moe_vla_node/decision")
    assert len(decisions) == 6 and all(len(d["msg"]["bins"]) == len(d["msg"]["dimension_names"]) for d in decisions)


def test_sqlite3_bags_train(sqlite_episode):
    out = sqlite_episode["tmp"] / "trained"
    result = moe_vla("train", "--data", sqlite_episode["bag"].parent, "--config", "tiny", "--out", out, "--steps", "2",
                     "--batch-size", "4", "--warmup", "1", "--threads", "1")
    assert "trained 2 updates" in result.stdout, result.stdout + result.stderr
    assert (out / "model.safetensors").is_file()


def test_damaged_sqlite3_files_are_reported(sqlite_episode, tmp_path):
    data = (sqlite_episode["bag"] / "episode.db3").read_bytes()
    garbage = tmp_path / "garbage.db3"
    garbage.write_bytes(b"this is not a bag" * 300)
    info = moe_vla("bag", "info", garbage)
    assert info.returncode == 0 and "Storage id:        sqlite3" in info.stdout
    assert "DAMAGED" in info.stdout and "not a rosbag2 sqlite3 file" in info.stdout
    truncated = tmp_path / "truncated.db3"
    truncated.write_bytes(data[: len(data) // 2])
    info = moe_vla("bag", "info", truncated)
    assert info.returncode == 0 and "DAMAGED" in info.stdout


def test_unknown_storage_is_an_error(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag, [("/instruction", "std_msgs/msg/String", T0, T["std_msgs/msg/String"](data="stop"))], StoragePlugin.MCAP)
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: mcap", "storage_identifier: rosbag_v1"))
    for args in (["bag", "info", bag], ["bag", "echo", bag]):
        result = moe_vla(*args, check=False)
        assert result.returncode != 0 and "storage `rosbag_v1` is not supported" in result.stderr, result.stderr


# The same values, for every writer. Definitions for mcap-ros2-support written out by hand.
SEP = "\n" + "=" * 80 + "\n"
HEADER_DEF = ("std_msgs/Header header" + "{deps}" + SEP + "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\n"
              "string frame_id" + SEP + "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec")
JOINT_DEF = HEADER_DEF.replace("{deps}", "\nstring[] name\nfloat64[] position\nfloat64[] velocity\nfloat64[] effort")
DIAG_DEF = (HEADER_DEF.replace("{deps}", "\nDiagnosticStatus[] status") + SEP + "MSG: diagnostic_msgs/DiagnosticStatus\n"
            "byte OK=0\nbyte WARN=1\nbyte ERROR=2\nbyte STALE=3\nbyte level\nstring name\nstring message\n"
            "string hardware_id\nKeyValue[] values" + SEP + "MSG: diagnostic_msgs/KeyValue\nstring key\nstring value")
SHAPES_FULL_DEF = SHAPES_DEF + SEP + "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z"
HDR = {"stamp": {"sec": 12, "nanosec": 34}, "frame_id": "base"}
JOINTS = [{"header": HDR, "name": ["hip", "knee", "ankle"], "position": [0.5, -1.25, 3.0], "velocity": [], "effort": [1e-3]},
          {"header": {**HDR, "frame_id": ""}, "name": [], "position": [], "velocity": [2.0], "effort": []}]
DIAG = {"header": HDR, "status": [
    {"level": 2, "name": "motor", "message": "hot", "hardware_id": "m1",
     "values": [{"key": "temp", "value": "80"}, {"key": "", "value": "ü"}]},
    {"level": 0, "name": "", "message": "", "hardware_id": "", "values": []}]}
SHAPES_VALUES = [
    {"label": "ten chars!", "small": [-1, 2147483647], "xyz": [1.0, 2.0, 3.0], "tags": ["a", "", "ünï"], "flag": 7,
     "after_flag": -2.5, "points": [{"x": 1.0, "y": -2.0, "z": 1e300}], "blob": bytes(range(100)),
     "short_blob": [1, 2, 3, 4], "ok": True},
    {"label": "", "small": [], "xyz": [0.0, 0.0, -0.5], "tags": [], "flag": 255, "after_flag": 0.125, "points": [],
     "blob": b"\x01\x02", "short_blob": [0, 0, 0, 9], "ok": False},
]
TYPES = {"/joints": "sensor_msgs/msg/JointState", "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray", "/shapes": SHAPES}
MESSAGES = [("/joints", JOINTS[0]), ("/diagnostics", DIAG), ("/shapes", SHAPES_VALUES[0]), ("/joints", JOINTS[1]),
            ("/shapes", SHAPES_VALUES[1])]


def expected_echo(value):
    """What bag echo prints for a written value: byte strings over 64 bytes as length and CRC32."""
    if isinstance(value, bytes):
        return {"len": len(value), "crc32": crc(value)} if len(value) > 64 else list(value)
    if isinstance(value, dict):
        return {k: expected_echo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expected_echo(v) for v in value]
    return value


def to_rosbags(typ, value):
    """The rosbags message of `typ` holding `value`, arrays of numbers as numpy arrays."""
    if typ == "sensor_msgs/msg/JointState":
        return T[typ](header=to_rosbags("std_msgs/msg/Header", value["header"]), name=value["name"],
                      **{k: np.array(value[k], np.float64) for k in ("position", "velocity", "effort")})
    if typ == "std_msgs/msg/Header":
        return T[typ](stamp=T["builtin_interfaces/msg/Time"](**value["stamp"]), frame_id=value["frame_id"])
    if typ == "diagnostic_msgs/msg/DiagnosticArray":
        status = [T["diagnostic_msgs/msg/DiagnosticStatus"](
            level=s["level"], name=s["name"], message=s["message"], hardware_id=s["hardware_id"],
            values=[T["diagnostic_msgs/msg/KeyValue"](**kv) for kv in s["values"]]) for s in value["status"]]
        return T[typ](header=to_rosbags("std_msgs/msg/Header", value["header"]), status=status)
    return T[typ](
        label=value["label"], small=np.array(value["small"], np.int32), xyz=np.array(value["xyz"], np.float64),
        tags=value["tags"], flag=value["flag"], after_flag=value["after_flag"],
        points=[T["geometry_msgs/msg/Point"](**pt) for pt in value["points"]],
        blob=np.frombuffer(value["blob"], np.uint8), short_blob=np.array(value["short_blob"], np.uint8), ok=value["ok"])


def write_with(writer, path):
    if writer == "mcap-ros2-support":
        path = path.with_suffix(".mcap")
        defs = {"/joints": JOINT_DEF, "/diagnostics": DIAG_DEF, "/shapes": SHAPES_FULL_DEF}
        with open(path, "wb") as f:
            w = McapRos2Writer(f)
            schemas = {topic: w.register_msgdef(TYPES[topic], defs[topic]) for topic in TYPES}
            for i, (topic, value) in enumerate(MESSAGES):
                w.write_message(topic, schemas[topic], value, log_time=T0 + i)
            w.finish()
        return path
    storage = StoragePlugin.MCAP if writer == "rosbags-mcap" else StoragePlugin.SQLITE3
    write_bag(path, [(topic, TYPES[topic], T0 + i, to_rosbags(TYPES[topic], value))
                     for i, (topic, value) in enumerate(MESSAGES)], storage)
    return path


@pytest.mark.parametrize("writer", ["rosbags-mcap", "rosbags-sqlite3", "mcap-ros2-support"])
def test_echo_decodes_third_party_types_from_the_bags_definitions(writer, tmp_path):
    path = write_with(writer, tmp_path / "bag")
    result = moe_vla("bag", "echo", path)
    assert result.stderr == ""
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(m["topic"], m["type"], m["log_time"]) for m in got] == [
        (topic, TYPES[topic], T0 + i) for i, (topic, _) in enumerate(MESSAGES)]
    for m, (_, value) in zip(got, MESSAGES):
        assert m["msg"] == expected_echo(value)
