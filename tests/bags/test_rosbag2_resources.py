"""rosbag2's own test bags (tests/bags/rosbag2_resources, both storages): `bag info` lists every one
with the counts its metadata.yaml records, and `bag echo` decodes every message it has a definition
for, naming the types and the reason for the rest."""

import json
import re
from pathlib import Path

import pytest
import yaml

from bagtools import moe_vla

RESOURCES = Path(__file__).parent / "rosbag2_resources"
WITH_METADATA = sorted(m.parent for m in RESOURCES.rglob("metadata.yaml"))
BARE = sorted(f for f in list(RESOURCES.rglob("*.mcap")) + list(RESOURCES.rglob("*.db3"))
              if not (f.parent / "metadata.yaml").exists())
# Bags echo cannot decode, and why: sqlite3 bags from before rosbag2 stored definitions, holding
# test_msgs types moe_vla does not know, and bags of an unknown serialization format.
UNDECODABLE = {
    "rosbag2_tests/resources/mcap/wrong_rmw_test": "is not cdr",
    "rosbag2_tests/resources/sqlite3/wrong_rmw_test": "no definition",
    "rosbag2_transport/test/resources/sqlite3/rewriter_a": "no definition",
    "rosbag2_transport/test/resources/sqlite3/rewriter_b": "no definition",
    "rosbag2_transport/test/resources/sqlite3/test_bag_for_seek": "no definition",
}


def name(path: Path) -> str:
    return str(path.relative_to(RESOURCES))


def info(path: Path):
    out = moe_vla("bag", "info", path).stdout
    assert "DAMAGED" not in out, out
    storage = re.search(r"Storage id:\s+(\S+)", out).group(1)
    total = int(re.search(r"Messages:\s+(\d+)", out).group(1))
    topics = {t: int(n) for t, n in re.findall(r"Topic: (\S+)\s*\| Type: \S+\s*\| Count: (\d+)", out)}
    return storage, total, topics


def test_the_resources_hold_both_storages():
    storages = {yaml.safe_load((d / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["storage_identifier"]
                for d in WITH_METADATA}
    assert storages == {"mcap", "sqlite3"} and len(WITH_METADATA) >= 10 and BARE


@pytest.mark.parametrize("bag", WITH_METADATA, ids=name)
def test_bag_info_gives_the_counts_rosbag2_recorded(bag):
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    storage, total, topics = info(bag)
    assert storage == meta["storage_identifier"]
    assert total == meta["message_count"]
    assert topics == {t["topic_metadata"]["name"]: t["message_count"]
                      for t in meta["topics_with_message_count"] if t["message_count"] > 0}


@pytest.mark.parametrize("bag", WITH_METADATA + BARE, ids=name)
def test_bag_echo_decodes_every_message_it_has_a_definition_for(bag):
    _, total, _ = info(bag)
    echo = moe_vla("bag", "echo", bag)
    lines = [json.loads(line) for line in echo.stdout.splitlines()]
    assert not [line for line in lines if "error" in line]
    reason = UNDECODABLE.get(name(bag))
    if reason is None:
        assert len(lines) == total
        assert all(isinstance(line["msg"], dict) for line in lines)
    else:
        assert lines == [] and f"skipped {total} messages" in echo.stderr and reason in echo.stderr, echo.stderr


def test_service_events_decode_as_rosidl_generates_them():
    bag = RESOURCES / "rosbag2_tests/resources/sqlite3/bag_with_topics_and_service_events"
    events = [line["msg"] for line in map(json.loads, moe_vla("bag", "echo", bag).stdout.splitlines())
              if line["type"].endswith("_Event")]
    assert events
    for event in events:
        assert set(event) == {"info", "request", "response"}
        assert len(event["request"]) + len(event["response"]) == 1  # each event carries one side
        assert set(event["info"]) == {"event_type", "stamp", "client_gid", "sequence_number"}
