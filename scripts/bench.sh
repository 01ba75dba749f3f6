#!/usr/bin/env bash
# Installs the package and runs every benchmark against batched 0.1.5 from PyPI in one run: call
# overhead (threads and asyncio), padding, all-MiniLM-L6-v2 in one process, and the same model
# behind FastAPI. Then draws benches/results/benchmarks.png and rewrites the benchmark tables
# from the results. Pass --full for the longer runs (see benches/report.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHED_PROFILE=release source scripts/setup.sh

python benches/report.py "$@"
