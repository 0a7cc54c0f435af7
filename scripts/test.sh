#!/usr/bin/env bash
# Checks formatting, sets up (scripts/setup.sh), then runs the whole test suite: Rust unit and integration tests,
# one pass of each benchmark as a smoke test, the ROS 2 tests against real rclpy peers, and the
# rosbag2 tests against third-party readers and writers.
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
# Lints next: clippy's warnings fail the run. The ROS adapter (feature `ros`) is not linted here: it
# builds only in CMake's r2r environment.
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --lib --bins --tests --benches -- -D warnings
else
  echo "test: clippy is not installed (rustup component add clippy): lints not checked" >&2
fi
./scripts/setup.sh
cargo test --locked --bench decode --bench train_step
cargo test --locked --lib --bins --tests
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
python3 -m pytest -q -p no:cacheprovider tests/ros tests/bags tests/encoders
