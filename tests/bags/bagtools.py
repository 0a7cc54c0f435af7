"""Runs the installed moe_vla CLI for the bag tests."""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def moe_vla(*args, check=True) -> subprocess.CompletedProcess:
    binary = ROOT / "install/moe_vla/lib/moe_vla/moe_vla"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run scripts/setup.sh")
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, check=check, timeout=600)


def echo(bag, topic=None) -> list:
    args = ["bag", "echo", bag] + (["--topic", topic] if topic else [])
    return [json.loads(line) for line in moe_vla(*args).stdout.splitlines()]
