#!/usr/bin/env bash
# Sets up everything moe_vla needs and builds its two ROS 2 packages into install/moe_vla_msgs and
# install/moe_vla.
# Idempotent and non-interactive: run it again after pulling and only what changed rebuilds.
#
# - Uses an already-sourced ROS 2 if there is one; otherwise builds .ros/, a Python venv holding
#   ROS 2 kilted from PyPI, with the workarounds marked "Workaround" below.
# - Installs missing Debian packages (clang for r2r's bindgen, cmake) when it can.
# - Downloads the pretrained sentence encoder (scripts/fetch_encoders.sh) that the package installs.
# - Installs the physics world's parts (scripts/setup_physics.sh: MuJoCo, the Go2, its walking policy);
#   moe_vla_sim_node and the moe_vla CLI are built with them (feature `physics`), moe_vla_node never.
# - Builds the interfaces (moe_vla_msgs) with CMake, then the Rust binaries with cargo (feature `ros`).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"
start=$SECONDS

log() { echo "setup: $*"; }

install_apt() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v clang >/dev/null || missing+=(clang)
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
  command -v g++ >/dev/null || missing+=(g++)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q || true
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# CMake refuses exported include directories inside the source tree, and the venv is inside it:
# numpy's headers are reached through a link outside (one per checkout).
numpy_include="${XDG_CACHE_HOME:-$HOME/.cache}/moe_vla/numpy-include-$(echo "$root" | cksum | cut -d' ' -f1)"

link_numpy_include() {
  local target
  target="$("$root/.ros/bin/python" -c 'import numpy; print(numpy.get_include())')"
  mkdir -p "$(dirname "$numpy_include")"
  ln -sfn "$target" "$numpy_include"
}

ROS_WHEELS=(
  ros-kilted-rcl ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp
  ros-kilted-std-msgs ros-kilted-sensor-msgs ros-kilted-geometry-msgs ros-kilted-std-srvs
  ros-kilted-diagnostic-msgs ros-kilted-lifecycle-msgs ros-kilted-builtin-interfaces ros-kilted-rosgraph-msgs
  ros-kilted-rosidl-runtime-c ros-kilted-rosidl-typesupport-c ros-kilted-rosidl-typesupport-cpp
  ros-kilted-rosidl-typesupport-introspection-c
  ros-kilted-rosidl-default-generators ros-kilted-rosidl-core-generators ros-kilted-ament-cmake
  ros-kilted-ament-package ros-kilted-ament-cmake-include-directories
  ros-kilted-ament-cmake-ros-core ros-kilted-ament-cmake-ros ros-kilted-ament-cmake-pytest
  colcon-common-extensions
)
# Test runner, and the third-party rosbag2/MCAP readers and writers the bag tests check against.
TEST_WHEELS=(pytest pyyaml rosbags mcap mcap-ros2-support)

make_venv() {
  local venv="$root/.ros" stamp="$root/.ros/.moe_vla-setup-v3"
  [ -f "$stamp" ] && return 0
  log "creating $venv from the ROS 2 kilted wheels on PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${ROS_WHEELS[@]}"
  # Workaround: no librmw_implementation.so in the wheels; r2r links it, fastrtps is the only rmw.
  ln -sf librmw_fastrtps_cpp.so "$venv/lib/librmw_implementation.so"
  # Workaround: the wheels' CMake files name the wheel builder's Python and numpy.
  local py_include
  py_include="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  # (grep finds nothing when a newer setup re-runs this over a venv it already rewrote.)
  { grep -rlF /opt/python/cp311-cp311 "$venv/share" "$venv/lib/cmake" 2>/dev/null || true; } | while read -r f; do
    sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$numpy_include#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" \
      -e "s#/opt/python/cp311-cp311#$venv#g" "$f"
  done
  # colcon must not take the venv's package.xml files for workspace packages.
  touch "$venv/COLCON_IGNORE"
  touch "$stamp"
}

# Into the ROS venv, or with a sourced ROS 2 into a venv of their own (build/test-venv, which sees
# the system's packages and so the distribution's rclpy): never into the system Python, which
# PEP 668 distributions (Ubuntu 24.04, Debian 12) refuse to pip-install into.
install_test_wheels() {
  local pip=("$root/.ros/bin/pip") dir="$root/.ros"
  if [ -n "${ROS_DISTRO_SOURCED:-}" ]; then
    dir="$root/build/test-venv"
    if [ ! -x "$dir/bin/python" ]; then
      log "creating $dir for the test tools"
      python3 -m venv --system-site-packages "$dir"
    fi
    pip=("$dir/bin/pip")
  fi
  local stamp
  stamp="$dir/.test-wheels-$(echo "${TEST_WHEELS[*]}" | cksum | cut -d' ' -f1)"
  [ -f "$stamp" ] && return 0
  log "installing test tools: ${TEST_WHEELS[*]}"
  "${pip[@]}" install -q --disable-pip-version-check "${TEST_WHEELS[@]}"
  mkdir -p "$dir" && touch "$stamp"
}

if [ -n "${ROS_DISTRO:-}" ] && [ -n "${AMENT_PREFIX_PATH:-}" ] && [ -z "${MOE_VLA_ROS_VENV:-}" ]; then
  ROS_DISTRO_SOURCED=1
  log "using the sourced ROS 2 $ROS_DISTRO"
  install_apt
else
  log "no ROS 2 is sourced: building with ROS 2 kilted from the PyPI wheels in .ros/"
  install_apt
  make_venv
  link_numpy_include
fi
install_test_wheels
# The pretrained sentence encoder of `text.kind: minilm` models, into the cache CMake installs from.
./scripts/fetch_encoders.sh
# The physics world's parts (cargo feature `physics`): MuJoCo, the Go2 model and its walking
# policy, into the user's cache. moe_vla_sim_node and the CLI are built with them; the node never.
./scripts/setup_physics.sh
# shellcheck source=scripts/physics_env.sh
source scripts/physics_env.sh
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
log "ROS 2 from $MOE_VLA_ROS_SOURCE ($((SECONDS - start)) s)"

# Two packages, as colcon would build them: moe_vla_msgs (the interfaces), then moe_vla (the Rust
# binaries, launch files, parameters and models). colcon must not take these build trees for
# workspace packages when the repository sits in a workspace.
mkdir -p "$root/build" "$root/install"
touch "$root/build/COLCON_IGNORE" "$root/install/COLCON_IGNORE"
quiet() { # runs a step with its output in a log, shown only when it fails
  local log=$1 step=$2; shift 2
  "$@" >"$log/$step.log" 2>&1 || { tail -n 60 "$log/$step.log"; log "$step failed (log: $log/$step.log)"; exit 1; }
}
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$(command -v python3)"
  -DMOE_VLA_PHYSICS=ON -DMOE_VLA_MUJOCO_DIR="$MUJOCO_DYNAMIC_LINK_DIR")
[ -n "${MOE_VLA_ROS_VENV:-}" ] && cmake_args+=(-DPython3_NumPy_INCLUDE_DIR="$numpy_include")

msgs_build="$root/build/moe_vla_msgs" msgs_prefix="$root/install/moe_vla_msgs"
mkdir -p "$msgs_build"
quiet "$msgs_build" configure cmake -S "$root/moe_vla_msgs" -B "$msgs_build" -DCMAKE_INSTALL_PREFIX="$msgs_prefix" "${cmake_args[@]}"
quiet "$msgs_build" build cmake --build "$msgs_build" -j"$(nproc)"
quiet "$msgs_build" install cmake --install "$msgs_build"
log "moe_vla_msgs built ($((SECONDS - start)) s); building moe_vla's Rust binaries"
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh

build="$root/build/moe_vla" prefix="$root/install/moe_vla"
mkdir -p "$build"
quiet "$build" configure cmake -S "$root/moe_vla" -B "$build" -DCMAKE_INSTALL_PREFIX="$prefix" "${cmake_args[@]}"
quiet "$build" build cmake --build "$build" -j"$(nproc)"
# cargo's own progress stays visible: a cold build takes minutes.
cmake --install "$build" | { grep -v -e '^-- \(Up-to-date\|Installing\|Set runtime path\)' -e "^\(Listing\|Compiling\) '" || true; }
[ -x "$prefix/lib/moe_vla/moe_vla_node" ] || { log "install failed"; exit 1; }
# shellcheck source=scripts/ros_env.sh
source scripts/ros_env.sh
log "built install/moe_vla_msgs and install/moe_vla ($((SECONDS - start)) s); run: source scripts/ros_env.sh && moe_vla_node --help"
