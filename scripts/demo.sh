#!/usr/bin/env bash
# The main job on the default model: sets up and builds the ROS 2 package, starts moe_vla_node,
# drives it with a real rclpy camera/instruction peer, and reports end-to-end latency
# (image published -> cmd_vel received). Safe to run repeatedly; non-interactive.
#
# Until a trained default model ships (models/default), it runs a model made by `moe_vla init`
# and says UNTRAINED: the commands then mean nothing, the latency is real.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"

./scripts/setup.sh
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
model=models/default
if [ ! -f "$model/config.json" ]; then
  model=models/untrained-tiny
  [ -f "$model/config.json" ] || moe_vla init --preset tiny --instructions data/instructions.txt --out "$model"
  echo "demo: no trained default model yet; using the UNTRAINED $model"
fi
moe_vla info "$model"
python3 scripts/latency.py "$model" --frames 100
