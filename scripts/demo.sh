#!/usr/bin/env bash
# The main job on the default model: sets up and builds the ROS 2 package, then runs
# moe_vla_node (the policy, models/default) closed-loop with moe_vla_sim_node (the task world)
# over ROS 2 and prints each episode's outcome. Safe to run repeatedly; non-interactive.
#
#   EPISODES=12 SEED=3 ./scripts/demo.sh     # more episodes, other scenes
#   FAMILY=crawl ./scripts/demo.sh           # one task family only
#   WORLD=physics ./scripts/demo.sh          # the Go2 in MuJoCo under its walking policy (models/physics)
#   MODEL=models/history3 ./scripts/demo.sh # another model
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"

./scripts/setup.sh
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
# Each world's model: models/physics was trained in the physics world, models/default in the
# kinematic one.
if [ "${WORLD:-kinematic}" = physics ]; then
  model="${MODEL:-models/physics}"
else
  model="${MODEL:-models/default}"
fi
case "$model" in /*) ;; *) model="$PWD/$model" ;; esac
moe_vla info "$model"

# A domain of its own, so the demo neither hears nor drives other ROS 2 systems on this network
# (within 1..101: higher domains reach the ephemeral port range).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 90) + 10 ))}"
# The simulated robot needs no operator: armed at start (a real robot keeps start_enabled false).
moe_vla_node --ros-args -p model_dir:="$model" -p start_enabled:=true &
node=$!
trap 'kill -INT "$node" 2>/dev/null; wait "$node" 2>/dev/null || true' EXIT
moe_vla_sim_node --ros-args -p episodes:="${EPISODES:-6}" -p seed:="${SEED:-0}" -p family:="${FAMILY:-all}" \
  -p world:="${WORLD:-kinematic}"
