#!/usr/bin/env bash
# Checks formatting, sets up (scripts/setup.sh), then runs the whole test suite: Rust unit and integration tests,
# one pass of each benchmark as a smoke test, the ROS 2 tests against real rclpy peers, the
# rosbag2 tests against third-party readers and writers, the sentence-encoder tests and the
# documentation checks (generated tables against their sources, the source layout), and the
# physics world's tests (feature `physics`).
# Safe to run repeatedly; non-interactive.
set -euo pipefail
cd "$(dirname "$0")/.."
# Dependencies build once into a cache outside the checkout, so fresh clones rebuild only this crate.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"

# Formatting first: it takes a second and fails early (rustfmt.toml holds the project's style).
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --check
else
  echo "test: rustfmt is not installed (rustup component add rustfmt): formatting not checked" >&2
fi
# Lints next: clippy's warnings fail the run. The ROS adapter (feature `ros`) is linted after setup,
# once ROS 2 and the interfaces are there.
clippy=false
if cargo clippy --version >/dev/null 2>&1; then
  clippy=true
  cargo clippy --locked --lib --bins --tests --benches -- -D warnings
else
  echo "test: clippy is not installed (rustup component add clippy): lints not checked" >&2
fi
./scripts/setup.sh
if $clippy; then
  (
    # r2r's environment as moe_vla/CMakeLists.txt sets it: r2r 0.9.7 predates kilted and its jazzy
    # path works there; only the interfaces the nodes use, plus a fingerprint of moe_vla_msgs so
    # that an edited message regenerates the bindings; r2r's done marks dropped so that a rerun of
    # its build script regenerates rather than reuses them.
    # shellcheck source=scripts/ros_env.sh
    source scripts/ros_env.sh
    if [ "${ROS_DISTRO:-}" = kilted ]; then export ROS_DISTRO=jazzy; fi
    msgs_hash=$(cat moe_vla_msgs/msg/*.msg moe_vla_msgs/action/*.action | sha1sum | cut -c1-12)
    export IDL_PACKAGE_FILTER="std_msgs;sensor_msgs;geometry_msgs;std_srvs;diagnostic_msgs;lifecycle_msgs;builtin_interfaces;rosgraph_msgs;moe_vla_msgs;moe_vla_msgs_$msgs_hash"
    rm -f "$CARGO_TARGET_DIR"/debug/build/r2r-*/out/*/done
    cargo clippy --locked --features ros --lib --bins --tests -- -D warnings
  )
fi
cargo test --locked --bench decode --bench train_step
cargo test --locked --lib --bins --tests
(
  # The physics world (feature `physics`), built against the MuJoCo scripts/setup.sh installed.
  # shellcheck source=scripts/physics_env.sh
  source scripts/physics_env.sh
  if $clippy; then
    cargo clippy --locked --features physics --lib --bins --tests -- -D warnings
  fi
  cargo test --locked --features physics --lib --test default_model physics
)
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
python3 -m pytest -q -p no:cacheprovider tests/ros tests/bags tests/encoders tests/docs
