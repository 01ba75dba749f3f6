#!/usr/bin/env bash
# Installs the package and runs the benchmark against batched 0.1.5 from PyPI, in one run.
# Pass --full for the longer run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

python benches/overhead.py "$@"
