# Sourced by the other scripts: makes (or reuses) the project's virtual environment and builds
# the extension into it. The venv and the cargo target folder live outside the clone, so a
# second run on the same machine only rebuilds what changed.
#
#   BATCHED_VENV      the venv (default ~/.cache/batched/venv)
#   BATCHED_EXTRAS    the extras to install (default test,torch,bench)
#   BATCHED_PROFILE   the cargo profile of the build (default quick; bench.sh uses release)
set -euo pipefail

BATCHED_VENV=${BATCHED_VENV:-$HOME/.cache/batched/venv}
BATCHED_EXTRAS=${BATCHED_EXTRAS:-test,torch,bench}
BATCHED_PROFILE=${BATCHED_PROFILE:-quick}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batched/target}

if [ ! -x "$BATCHED_VENV/bin/python" ]; then
    echo "setup: creating $BATCHED_VENV (the first run downloads several GB: torch's CUDA build)"
    python3 -m venv "$BATCHED_VENV"
fi
export VIRTUAL_ENV=$BATCHED_VENV
export PATH="$BATCHED_VENV/bin:$PATH"
export PYO3_PYTHON="$BATCHED_VENV/bin/python"

pip_install() { python -m pip install --quiet --disable-pip-version-check "$@"; }
# pip 25.1 is the first to install PEP 735 dependency groups.
pip_install "pip>=25.1" "maturin>=1.9.4,<2"
pip_install --group dev
# Builds the Rust extension and installs the package (editable) with the extras the tests,
# examples and benchmarks use; pip skips whatever is already installed.
maturin develop --quiet --profile "$BATCHED_PROFILE" --extras "$BATCHED_EXTRAS"
