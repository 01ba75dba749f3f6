#!/usr/bin/env bash
# Installs the package and runs the benchmarks against batched 0.1.5 from PyPI, each in one run:
# call overhead (threads and asyncio) and padding. Pass --full for the longer runs.
# Reports go to benches/results/*.md and *.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

python benches/overhead.py --md overhead.md "$@"
python benches/padding.py "$@"
