#!/usr/bin/env bash
# Runs every check: Rust format, lints and unit tests, Python lints, types and stubs, pytest
# with no test skipped for a missing package, then the release artifacts built and tested as a
# user installs them (scripts/wheel.sh, scripts/check_dist.sh).
#
#   scripts/test.sh          everything (what CI runs)
#   scripts/test.sh --fast   the edit-test loop: no examples, no slow tests, no wheel; needs
#                            neither the model packages nor Ray
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
if [ "${1:-}" = --fast ]; then
    fast=true
    shift
    export BATCHED_EXTRAS=${BATCHED_EXTRAS:-test,torch}
fi
source scripts/setup.sh
export BATCHED_REQUIRE_ALL=1

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --features python -- -D warnings
cargo test
# The loom models (scripts/loom.sh, minutes) build the shipped scheduler under `--cfg loom`;
# checking that build here keeps it from breaking unnoticed between their runs.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=${BATCHED_LOOM_TARGET_DIR:-$HOME/.cache/batched/target-loom} \
    cargo check --lib --tests --quiet
ruff check python tests benches examples
ruff format --check python tests benches examples
mypy python/batched
python -m mypy.stubtest batched._core

if $fast; then
    python -m pytest -m "not slow and not examples" "$@"
    exit 0
fi

mypy --strict examples
python -m pytest "$@"
bash scripts/wheel.sh
bash scripts/check_dist.sh
