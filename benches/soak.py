"""Soak test: millions of calls through the thread API, looking for leaks.

Caller threads make ``--calls`` blocking calls (5 million by default) of one processor whose
batch function is trivial: mostly single items, and every ``--list-every``-th call a list of
``--list-size`` items (the list path, counted as one call). Meanwhile another thread keeps
creating instances of a class with a ``@batched.dynamically`` method, calls it, drops the
instance and checks, through a weak reference, that its processor (and its worker thread) went
with it.

After a warm-up run of the same workload, the resident set size (VmRSS from /proc/self/status)
and the thread count (``threading.active_count()`` and the entries of /proc/self/task) are taken
before and after the measured run. The report goes to stdout and benches/results/soak.json; the
exit status is 1 if RSS grew by ``--max-rss-growth-mb`` (20) or more, if threads leaked, if a
processor was not freed, or if any call got a wrong result or an error.

    python benches/soak.py                    # 5 000 000 calls
    python benches/soak.py --calls 500000     # a quick one
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import batched

BENCH_DIR = Path(__file__).resolve().parent
GUARD_SECONDS = 30.0


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def thread_counts() -> dict[str, int]:
    return {
        "threading_active_count": threading.active_count(),
        "proc_self_task": len(os.listdir("/proc/self/task")),
    }


def double(items: list[int]) -> list[int]:
    return [item * 2 for item in items]


class Model:
    """Each instance gets its own processor and worker thread, which must go with it."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    @batched.dynamically(batch_size=8, timeout_ms=1.0)
    def predict(self, items: list[int]) -> list[int]:
        return [item * self.scale for item in items]


@dataclass
class Counts:
    calls: int = 0
    items: int = 0
    list_calls: int = 0
    errors: int = 0
    wrong: int = 0
    first_error: str | None = None


@dataclass
class Churn:
    created: int = 0
    freed: int = 0
    not_freed: int = 0
    errors: int = 0
    first_error: str | None = None
    rss_samples: list[int] = field(default_factory=list)


def caller(processor: Any, calls: int, start: int, list_every: int, list_size: int) -> Counts:
    counts = Counts()
    value = start
    for index in range(calls):
        try:
            if list_every and index % list_every == list_every - 1:
                items = list(range(value, value + list_size))
                result: Any = processor(items)
                ok = result == [item * 2 for item in items]
                counts.items += list_size
                counts.list_calls += 1
            else:
                result = processor(value)
                ok = result == value * 2
                counts.items += 1
        except Exception as error:
            counts.errors += 1
            counts.first_error = counts.first_error or repr(error)
        else:
            counts.wrong += not ok
        counts.calls += 1
        value += list_size
    return counts


def run_callers(
    processor: Any, calls: int, threads: int, list_every: int, list_size: int
) -> Counts:
    results: list[Counts] = []
    lock = threading.Lock()

    def work(share: int, start: int) -> None:
        counts = caller(processor, share, start, list_every, list_size)
        with lock:
            results.append(counts)

    workers = []
    for index in range(threads):
        share = calls // threads + (index < calls % threads)
        start = index * 10**9
        workers.append(threading.Thread(target=work, args=(share, start), name=f"soak-{index}"))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = Counts()
    for counts in results:
        total.calls += counts.calls
        total.items += counts.items
        total.list_calls += counts.list_calls
        total.errors += counts.errors
        total.wrong += counts.wrong
        total.first_error = total.first_error or counts.first_error
    return total


def churn_instances(stop: threading.Event, churn: Churn, every: float) -> None:
    """Creates, uses and drops instances of Model until ``stop``; checks each processor goes."""
    scale = 0
    while not stop.wait(every):
        scale += 1
        try:
            model = Model(scale)
            ok = model.predict(1) == scale and model.predict([2, 3]) == [2 * scale, 3 * scale]
            processor = weakref.ref(model.predict)
            churn.created += 1
            del model
            gc.collect()
            # Usually gone at once; the worker may still hold the instance for a moment.
            deadline = time.monotonic() + GUARD_SECONDS
            while processor() is not None and time.monotonic() < deadline:
                time.sleep(0.001)
            if processor() is None:
                churn.freed += 1
            else:
                churn.not_freed += 1
            if not ok:
                raise AssertionError("wrong result from a Model instance")
        except Exception as error:
            churn.errors += 1
            churn.first_error = churn.first_error or repr(error)
        if scale % 20 == 0:
            churn.rss_samples.append(rss_bytes())


def phase(processor: Any, args: argparse.Namespace, calls: int) -> tuple[Counts, Churn, float]:
    """One run of the workload with the instance churn alongside; returns counts and seconds."""
    stop = threading.Event()
    churn = Churn()
    churner = threading.Thread(
        target=churn_instances, args=(stop, churn, args.churn_every), name="soak-churn"
    )
    churner.start()
    started = time.perf_counter()
    counts = run_callers(processor, calls, args.threads, args.list_every, args.list_size)
    elapsed = time.perf_counter() - started
    stop.set()
    churner.join()
    return counts, churn, elapsed


def settle() -> None:
    """Lets finalizers run and freed memory go back before a measurement."""
    for _ in range(3):
        gc.collect()
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5_000_000)
    parser.add_argument("--warmup-calls", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout-ms", type=float, default=1.0)
    parser.add_argument("--list-every", type=int, default=16, help="0: single items only")
    parser.add_argument("--list-size", type=int, default=4)
    parser.add_argument("--churn-every", type=float, default=0.05, help="seconds between instances")
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "soak.json")
    args = parser.parse_args()

    processor = batched.BatchProcessor(
        double, batch_size=args.batch_size, timeout_ms=args.timeout_ms
    )
    mix = (
        f"{args.threads} threads; every {args.list_every}th call a list of {args.list_size} "
        "items, the others single items"
        if args.list_every
        else f"{args.threads} threads; single items only"
    )
    print(f"soak: {args.calls:,} calls ({mix}), batch_size={args.batch_size}", flush=True)

    warm_counts, warm_churn, warm_seconds = phase(processor, args, args.warmup_calls)
    settle()
    rss_before = rss_bytes()
    threads_before = thread_counts()
    print(
        f"warm-up: {warm_counts.calls:,} calls in {warm_seconds:.1f} s; "
        f"RSS {rss_before / 2**20:.1f} MiB, threads {threads_before}",
        flush=True,
    )

    counts, churn, seconds = phase(processor, args, args.calls)
    settle()
    rss_after = rss_bytes()
    threads_after = thread_counts()
    stats = processor.stats
    processor.shutdown()

    growth_mb = (rss_after - rss_before) / 1e6
    items_expected = warm_counts.items + counts.items
    failures = []
    if growth_mb >= args.max_rss_growth_mb:
        failures.append(f"RSS grew by {growth_mb:.1f} MB (limit {args.max_rss_growth_mb:g} MB)")
    if threads_after != threads_before:
        failures.append(f"thread count changed: {threads_before} -> {threads_after}")
    for name, run in (("warm-up", warm_churn), ("run", churn)):
        if run.not_freed or run.errors:
            failures.append(
                f"{name}: {run.not_freed} of {run.created} Model processors not freed, "
                f"{run.errors} errors ({run.first_error})"
            )
    for name, run_counts in (("warm-up", warm_counts), ("run", counts)):
        if run_counts.errors or run_counts.wrong:
            failures.append(
                f"{name}: {run_counts.errors} calls raised ({run_counts.first_error}), "
                f"{run_counts.wrong} wrong results"
            )
    if stats.total_processed != items_expected or stats.queue_size != 0:
        failures.append(
            f"stats: total_processed {stats.total_processed} != {items_expected} items, "
            f"queue_size {stats.queue_size}"
        )

    report = {
        "calls": counts.calls,
        "items": counts.items,
        "list_calls": counts.list_calls,
        "mix": mix,
        "batch_size": args.batch_size,
        "timeout_ms": args.timeout_ms,
        "seconds": round(seconds, 2),
        "calls_per_second": round(counts.calls / seconds),
        "warmup_calls": warm_counts.calls,
        "rss_before_mib": round(rss_before / 2**20, 2),
        "rss_after_mib": round(rss_after / 2**20, 2),
        "rss_growth_mb": round(growth_mb, 2),
        "rss_samples_mib": [round(sample / 2**20, 1) for sample in churn.rss_samples],
        "threads_before": threads_before,
        "threads_after": threads_after,
        "instances_created": warm_churn.created + churn.created,
        "instances_freed": warm_churn.freed + churn.freed,
        "avg_batch_size": round(stats.avg_batch_size, 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "failures": failures,
        "ok": not failures,
    }
    print(
        f"run: {counts.calls:,} calls ({counts.items:,} items, {counts.list_calls:,} list calls) "
        f"in {seconds:.1f} s = {counts.calls / seconds:,.0f} calls/s, "
        f"mean batch {stats.avg_batch_size:.1f}"
    )
    print(
        f"RSS: {rss_before / 2**20:.1f} MiB before, {rss_after / 2**20:.1f} MiB after "
        f"({growth_mb:+.2f} MB)"
    )
    print(f"threads: before {threads_before}, after {threads_after}")
    print(
        f"Model instances: {report['instances_created']} created, "
        f"{report['instances_freed']} processors freed"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: no growth, no leaked threads, every processor freed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
