#!/usr/bin/env bash
# Runs every check: Rust format, lints and unit tests, Python lints, types, stubs and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --features python -- -D warnings
cargo test
ruff check python tests benches examples
ruff format --check python tests benches examples
mypy python/batched
mypy --strict examples
python -m mypy.stubtest batched._core
python -m pytest "$@"
