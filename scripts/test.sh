#!/usr/bin/env bash
# Builds and runs the whole test suite. Safe to run repeatedly; non-interactive.
set -euo pipefail
cd "$(dirname "$0")/.."
# Dependencies build once into a cache outside the checkout, so fresh clones rebuild only this crate.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moe_vla/target}"
# Each criterion benchmark runs once as a smoke test, then the unit and integration tests.
cargo test --locked --bench decode
cargo test --locked --lib --bins --tests
