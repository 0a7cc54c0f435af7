#!/usr/bin/env bash
# Builds the CLI, creates an (untrained) tiny model if there is none, describes it and measures
# batch-1 decision latency. Safe to run repeatedly; non-interactive.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"
cargo build --release --locked --bin moe_vla
bin="$CARGO_TARGET_DIR/release/moe_vla"
model=models/untrained-tiny
if [ ! -f "$model/config.json" ]; then
  "$bin" init --preset tiny --instructions data/instructions.txt --out "$model"
fi
"$bin" info "$model"
"$bin" bench "$model" --threads 2
