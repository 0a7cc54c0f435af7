"""The source layout CONTRIBUTING.md promises, checked by scripts/check_layers.py: no import
circle, r2r only under src/ros/, no source file over 600 lines outside tests."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/check_layers.py"


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True)


def test_the_source_tree_keeps_its_layers():
    run = check(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_facade_and_a_child_using_its_parent_are_no_circle(tmp_path):
    root = write(tmp_path, {
        "lib.rs": "pub mod bag;\n",
        "bag/mod.rs": "mod read;\npub use read::Reader;\npub enum BagError {}\n",
        "bag/read.rs": "use super::BagError;\npub struct Reader;\n",
    })
    assert check(root).returncode == 0


def test_siblings_that_import_each_other_are_reported(tmp_path):
    root = write(tmp_path, {
        "lib.rs": "pub mod bag;\n",
        "bag/mod.rs": "mod read;\nmod sqlite;\n",
        "bag/read.rs": "use super::sqlite::Db;\npub struct Reader;\n",
        "bag/sqlite.rs": "use crate::bag::{read::{self, Reader}};\npub struct Db;\n",
    })
    run = check(root)
    assert run.returncode == 1
    assert "import circle among bag::read, bag::sqlite" in run.stdout


def test_r2r_outside_ros_and_a_long_file_are_reported(tmp_path):
    root = write(tmp_path, {
        "lib.rs": "pub mod control;\npub mod ros;\n",
        "control/mod.rs": "use r2r::QosProfile;\n" + "// line\n" * 600,
        "ros/mod.rs": "use r2r::QosProfile;\n",
    })
    run = check(root)
    assert run.returncode == 1
    assert "src/control/mod.rs: imports r2r outside src/ros/" in run.stdout
    assert "src/control/mod.rs: 601 lines" in run.stdout
    assert "src/ros/mod.rs" not in run.stdout
