# Source this file (bash): the environment that builds and runs the physics world (cargo feature
# `physics`) against the MuJoCo that scripts/setup_physics.sh installed.
# shellcheck shell=bash
MOE_VLA_PHYSICS_DIR="${MOE_VLA_PHYSICS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe_vla/physics}"
export MOE_VLA_PHYSICS_DIR
if [ ! -e "$MOE_VLA_PHYSICS_DIR/lib/libmujoco.so" ]; then
  echo "moe_vla: no MuJoCo in $MOE_VLA_PHYSICS_DIR: run scripts/setup_physics.sh" >&2
fi
# mujoco-rs links libmujoco.so from here at build time ...
export MUJOCO_DYNAMIC_LINK_DIR="$MOE_VLA_PHYSICS_DIR/lib"
# ... and the loader finds libmujoco.so.3.17.0 here at run time.
case ":${LD_LIBRARY_PATH:-}:" in
  *":$MUJOCO_DYNAMIC_LINK_DIR:"*) ;;
  *) export LD_LIBRARY_PATH="$MUJOCO_DYNAMIC_LINK_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
# Headless rendering through EGL (Mesa renders without a GPU).
export MUJOCO_GL="${MUJOCO_GL:-egl}"
