# Sourced by the other scripts: makes (or reuses) the project's virtual environment and builds
# the extension into it. The venv and the cargo target folder live outside the clone, so a
# second run on the same machine only rebuilds what changed.
set -euo pipefail

BATCHED_VENV=${BATCHED_VENV:-$HOME/.cache/batched/venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batched/target}

if [ ! -x "$BATCHED_VENV/bin/python" ]; then
    echo "setup: creating $BATCHED_VENV"
    python3 -m venv "$BATCHED_VENV"
fi
export VIRTUAL_ENV=$BATCHED_VENV
export PATH="$BATCHED_VENV/bin:$PATH"
export PYO3_PYTHON="$BATCHED_VENV/bin/python"

python -m pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2"
# Builds the Rust extension in release mode and installs the package (editable) with the extras
# the tests, examples and benchmarks use; pip skips whatever is already installed.
maturin develop --release --quiet --extras test,torch,bench
