"""Runs the installed moe_vla CLI for the bag tests."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def moe_vla(*args, check=True) -> subprocess.CompletedProcess:
    # `colcon test` names its install tree in MOE_VLA_BIN_DIR; scripts/setup.sh installs into the checkout.
    binary = Path(os.environ.get("MOE_VLA_BIN_DIR") or ROOT / "install/moe_vla/lib/moe_vla") / "moe_vla"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run scripts/setup.sh")
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, check=check, timeout=600)


def echo(bag, topic=None) -> list:
    args = ["bag", "echo", bag] + (["--topic", topic] if topic else [])
    return [json.loads(line) for line in moe_vla(*args).stdout.splitlines()]
