# Source this file (bash): the ROS 2 environment moe_vla builds and runs in.
#
# - A ROS 2 that is already sourced (apt install of Humble, Jazzy or Kilted) is used as it is.
# - Otherwise the kilted wheels in .ros/ (made by scripts/setup.sh) are put on the paths.
# Then this repository's install prefixes (install/moe_vla_msgs, install/moe_vla) are overlaid if
# they exist.
# shellcheck shell=bash

MOE_VLA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MOE_VLA_ROOT

if [ -z "${MOE_VLA_ROS_VENV:-}" ] && [ -n "${ROS_DISTRO:-}" ] && [ -n "${AMENT_PREFIX_PATH:-}" ]; then
  export MOE_VLA_ROS_SOURCE="system ($ROS_DISTRO)"
  # The test tools live in a venv over the system Python (scripts/setup.sh makes it).
  if [ -x "$MOE_VLA_ROOT/build/test-venv/bin/python" ]; then
    export PATH="$MOE_VLA_ROOT/build/test-venv/bin:$PATH"
  fi
else
  venv="$MOE_VLA_ROOT/.ros"
  if [ ! -x "$venv/bin/python" ]; then
    echo "moe_vla: no ROS 2 is sourced and $venv does not exist: run scripts/setup.sh" >&2
    return 1 2>/dev/null || exit 1
  fi
  export MOE_VLA_ROS_VENV="$venv"
  export MOE_VLA_ROS_SOURCE="PyPI wheels ($venv)"
  # Where scripts/setup.sh links numpy's headers for CMake (-DPython3_NumPy_INCLUDE_DIR).
  MOE_VLA_NUMPY_INCLUDE="${XDG_CACHE_HOME:-$HOME/.cache}/moe_vla/numpy-include-$(echo "$MOE_VLA_ROOT" | cksum | cut -d' ' -f1)"
  export MOE_VLA_NUMPY_INCLUDE
  export VIRTUAL_ENV="$venv"
  export ROS_DISTRO=kilted
  export ROS_VERSION=2
  export ROS_PYTHON_VERSION=3
  export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
  export AMENT_PREFIX_PATH="$venv"
  export CMAKE_PREFIX_PATH="$venv"
  site="$(echo "$venv"/lib/python3*/site-packages)"
  libs="$venv/lib"
  for d in "$site"/ros_*.libs; do libs="$libs:$d"; done
  # librcl from the wheels loads Python extension libraries: binaries link libpython (build.rs).
  pylib="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  pyver="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LDVERSION"))')"
  export MOE_VLA_LIBPYTHON="$pylib:python$pyver"
  export LD_LIBRARY_PATH="$libs:$pylib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$venv/bin:$PATH"
  unset site libs pylib pyver d
fi

for prefix in "$MOE_VLA_ROOT/install/moe_vla_msgs" "$MOE_VLA_ROOT/install/moe_vla"; do
  [ -d "$prefix" ] || continue
  export AMENT_PREFIX_PATH="$prefix:$AMENT_PREFIX_PATH"
  export CMAKE_PREFIX_PATH="$prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for d in "$prefix"/lib/python3*/site-packages "$prefix"/local/lib/python3*/dist-packages; do
    [ -d "$d" ] && export PYTHONPATH="$d${PYTHONPATH:+:$PYTHONPATH}"
  done
  [ -d "$prefix/lib/moe_vla" ] && export PATH="$prefix/lib/moe_vla:$PATH"
  unset d
done
unset prefix venv
