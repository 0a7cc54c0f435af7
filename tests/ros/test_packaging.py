"""The repository's two ROS 2 packages as a robot workspace sees them: moe_vla_msgs builds and
imports on its own (a consumer needs no Rust), and colcon builds both from a checkout."""

import os
import subprocess
import sys
from pathlib import Path

import peer as p


def without(prefix: Path) -> dict:
    """This environment minus every path under `prefix` (the repository's own install tree)."""
    env = dict(os.environ)
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "PATH"):
        env[var] = ":".join(x for x in env.get(var, "").split(":") if x and not x.startswith(str(prefix)))
    return env


def cmake_args(testing=False) -> list:
    args = ["-DCMAKE_BUILD_TYPE=Release", f"-DBUILD_TESTING={'ON' if testing else 'OFF'}",
            f"-DPython3_EXECUTABLE={sys.executable}"]
    if os.environ.get("MOE_VLA_NUMPY_INCLUDE"):
        args.append(f"-DPython3_NumPy_INCLUDE_DIR={os.environ['MOE_VLA_NUMPY_INCLUDE']}")
    return args


def run(cmd, env, cwd=None, timeout=900):
    out = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def site_packages(prefix: Path) -> str:
    found = list(prefix.glob("lib/python3*/site-packages")) + list(prefix.glob("local/lib/python3*/dist-packages"))
    assert found, f"no Python packages under {prefix}"
    return str(found[0])


IMPORT_CHECK = """
import importlib.util
from rclpy.serialization import deserialize_message, serialize_message
from moe_vla_msgs.msg import GaitCommand, VlaDecision, EpisodeOutcome
from moe_vla_msgs.action import FollowInstruction
d = VlaDecision(instruction="go to the red ball", bins=[1, 2], dimension_names=["terminate", "x_vel"])
assert deserialize_message(serialize_message(d), VlaDecision) == d
assert GaitCommand.TROT == 1 and FollowInstruction.Result.CANCELLED == 2
assert FollowInstruction.Feedback().decision == VlaDecision()
assert importlib.util.find_spec("moe_vla") is None, "the messages no longer live in moe_vla"
print("ok")
"""


def test_moe_vla_msgs_builds_and_imports_without_the_rust_package(tmp_path):
    env = without(p.ROOT / "install")
    build, prefix = tmp_path / "build", tmp_path / "install"
    run(["cmake", "-S", p.ROOT / "moe_vla_msgs", "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}", *cmake_args()], env)
    run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2)], env)
    run(["cmake", "--install", build], env)
    assert not (prefix / "lib/moe_vla").exists(), "no binaries: only interfaces"
    env.update(
        AMENT_PREFIX_PATH=f"{prefix}:{env['AMENT_PREFIX_PATH']}",
        LD_LIBRARY_PATH=f"{prefix / 'lib'}:{env['LD_LIBRARY_PATH']}",
        PYTHONPATH=f"{site_packages(prefix)}:{env.get('PYTHONPATH', '')}",
    )
    assert run([sys.executable, "-c", IMPORT_CHECK], env, cwd=tmp_path).stdout.strip() == "ok"


def test_colcon_builds_both_packages_from_the_checkout_and_colcon_test_runs_the_suites(tmp_path):
    env = without(p.ROOT / "install")
    listed = run(["colcon", "list", "--base-paths", p.ROOT, "--names-only", "--topological-order"], env, cwd=tmp_path)
    assert listed.stdout.split() == ["moe_vla_msgs", "moe_vla"], listed.stdout
    run(["colcon", "build", "--base-paths", p.ROOT, "--build-base", tmp_path / "build", "--install-base",
         tmp_path / "install", "--event-handlers", "console_direct-", "--cmake-args", *cmake_args(testing=True)], env,
        cwd=tmp_path, timeout=1800)
    install = tmp_path / "install"
    for binary in ("moe_vla_node", "moe_vla_sim_node", "moe_vla"):
        assert (install / "moe_vla/lib/moe_vla" / binary).is_file(), binary
    assert (install / "moe_vla/share/moe_vla/models/default/model.safetensors").is_file()
    # The sentence encoder (scripts/setup.sh fetched it into the cache before this test) is installed.
    assert (install / "moe_vla/share/moe_vla/encoders/all-MiniLM-L6-v2/model.safetensors").is_file()
    assert (install / "moe_vla_msgs/share/moe_vla_msgs/action/FollowInstruction.action").is_file()
    # The colcon-built node runs against the colcon-built interfaces.
    env.update(
        AMENT_PREFIX_PATH=f"{install / 'moe_vla'}:{install / 'moe_vla_msgs'}:{env['AMENT_PREFIX_PATH']}",
        LD_LIBRARY_PATH=f"{install / 'moe_vla_msgs/lib'}:{env['LD_LIBRARY_PATH']}",
    )
    listed = run([install / "moe_vla/lib/moe_vla/moe_vla_node", "--list-params"], env)
    assert "max_decision_age_s" in listed.stdout

    # `colcon test` knows the pytest suites; the bag suite (the shorter) runs here against the
    # colcon-built CLI and passes.
    listed = run(["ctest", "--test-dir", tmp_path / "build/moe_vla", "-N"], env)
    assert all(f"{suite}_tests" in listed.stdout for suite in ("ros", "bags", "encoders")), listed.stdout
    run(["colcon", "test", "--base-paths", p.ROOT, "--build-base", tmp_path / "build", "--install-base",
         tmp_path / "install", "--packages-select", "moe_vla", "--event-handlers", "console_direct-",
         "--return-code-on-test-failure", "--ctest-args", "-R", "bags_tests"], env, cwd=tmp_path, timeout=1800)
    results = run(["colcon", "test-result", "--test-result-base", tmp_path / "build/moe_vla", "--all"], env)
    summary = results.stdout.strip().splitlines()[-1]
    tests = int(summary.split(" tests")[0].split()[-1])
    assert tests > 0 and "0 errors, 0 failures" in summary, results.stdout


def needed(binary: Path) -> list:
    """The shared libraries `binary` names (its ELF DT_NEEDED entries)."""
    dynamic = run(["readelf", "--dynamic", binary], dict(os.environ)).stdout
    return [line.split("[")[1].split("]")[0] for line in dynamic.splitlines() if "(NEEDED)" in line]


def test_the_node_never_links_mujoco_while_the_world_and_the_cli_do():
    """scripts/setup.sh builds the physics world (MuJoCo) into moe_vla_sim_node and moe_vla from a
    second cargo build; the node a robot runs must not depend on it."""
    binaries = p.ROOT / "install/moe_vla/lib/moe_vla"
    assert not [lib for lib in needed(binaries / "moe_vla_node") if "mujoco" in lib]
    for binary in ("moe_vla_sim_node", "moe_vla"):
        assert any("mujoco" in lib for lib in needed(binaries / binary)), binary
