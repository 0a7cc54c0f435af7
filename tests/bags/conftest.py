import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/ros"))


def moe_vla(*args, check=True) -> subprocess.CompletedProcess:
    binary = ROOT / "install/moe_vla/lib/moe_vla/moe_vla"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run scripts/setup.sh")
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, check=check, timeout=600)


def echo(bag, topic=None) -> list:
    args = ["bag", "echo", bag] + (["--topic", topic] if topic else [])
    return [json.loads(line) for line in moe_vla(*args).stdout.splitlines()]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    moe_vla("init", "--preset", "tiny", "--seed", "7", "--instructions", ROOT / "data/instructions.txt", "--out", out)
    return out
