"""The stress workload of ``tests/test_stress.py``, for as long as you like.

64 threads and 2 000 asyncio tasks on two event loops call eight processors at once with single
items and lists, poison items, timeouts, cancellations and bounded queues; afterwards every call
must have had exactly one outcome, the right one, and the statistics must agree with what the
callers saw (see ``tests/stress_workload.py`` for the checks).

    python benches/stress.py                  # 10 minutes
    python benches/stress.py --seconds 3600 --seed 42

Prints the calls submitted and the outcomes counted, writes benches/results/stress.json, and
exits 1 if anything was lost, wrong or left waiting.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

import stress_workload  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the run")
    parser.add_argument("--seed", type=int, default=None, help="random by default")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--loops", type=int, default=2)
    parser.add_argument(
        "--output", type=Path, default=BENCH_DIR / "results" / "stress.json", help="JSON report"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    config = stress_workload.Config(
        seconds=args.seconds, threads=args.threads, tasks=args.tasks, loops=args.loops, seed=seed
    )
    print(f"stress run of {args.seconds:g} s, seed {seed}", flush=True)
    report = stress_workload.run(config)
    print(report.text())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report.summary(), indent=2) + "\n")
    print(f"wrote {args.output}")
    if report.problems:
        print(f"FAILED: {len(report.problems)} problems; rerun with --seed {seed}")
        return 1
    print("OK: every call ended exactly once with the right outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
