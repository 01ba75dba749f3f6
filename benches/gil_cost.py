"""What a microsecond of GIL time costs the padding benchmark's throughput, on each side.

The padding benchmark's workload with length-aware batching (16 caller threads sending rows of
lengths 8..512, ``sort_by_length=True, max_batch_tokens=1024``, the same simulated model), run
in this interpreter against this package only. Every quarter second the run switches between
three states:

* ``as is``;
* ``worker +X``: the batch function holds the GIL ``X`` µs longer per batch (a busy loop
  before its work), as more padding or more Python in the worker would;
* ``callers +X``: each caller holds it ``X`` µs longer per call, as a heavier caller would.

The VM's speed drifts over seconds and minutes, often by a third; states that alternate every
quarter second share those conditions, so their medians compare what separate runs cannot.
The report gives each state's items/s and the throughput lost per µs of GIL time added per
item (the worker's ``X`` is spread over the batch's rows). When the two sides cost alike per
µs, the GIL, not the worker thread, is what limits the run.

    python benches/gil_cost.py                      # torch, X = 50 µs, 30 s
    python benches/gil_cost.py --lib numpy --extra-us 20 --seconds 60

Results: a markdown report on stdout and in benches/results/gil_cost.md, JSON in
benches/results/gil_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import padding as P

SLOT_S = 0.25
# After a switch, in-flight batches and calls finish under the old state before counting.
SETTLE_S = 0.02
STATES = ("as is", "worker", "callers")


def hold_gil(seconds: float) -> None:
    """Busy-waits in Python, which keeps the GIL (no call here releases it)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(lib: str, extra_us: float, seconds: float) -> dict[str, Any]:
    import batched
    import batched.inference  # makes batched.inference an attribute of the package

    if lib == "torch":
        import torch

        torch.set_num_threads(1)  # as in padding.py
    extra_s = extra_us * 1e-6
    state = ["as is"]

    def on_batch() -> None:
        if state[0] == "worker":
            hold_gil(extra_s)

    counter = P.PadCounter()
    options = {"sort_by_length": True, "max_batch_tokens": P.MAX_BATCH_TOKENS}
    per_pos = P.FULL_BATCH_MODEL_S / (P.BATCH_SIZE * P.MAX_LEN)
    model = P.make_model(batched, lib, options, counter, per_pos, on_batch)
    all_rows = P.make_rows(lib, P.SEED, P.THREADS, 256)
    done = [0] * P.THREADS  # one counter per thread: no lock, no lost updates
    running = [True]
    errors: list[str] = []

    def caller(k: int) -> None:
        rows = all_rows[k]
        i = 0
        try:
            while running[0]:
                if state[0] == "callers":
                    hold_gil(extra_s)
                ids, mask, expected = rows[i % len(rows)]
                got = P.result_value(model({"input_ids": ids, "attention_mask": mask}))
                if got != expected:
                    raise P.BenchError(f"thread {k} got {got}, expected {expected}")
                done[k] += 1
                i += 1
        except BaseException as exc:  # report it; the run ends without this thread
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(P.THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in STATES}
    batches0, rows0 = counter.snapshot()[:2]
    end = time.perf_counter() + seconds
    slot = 0
    while time.perf_counter() < end and not errors:
        state[0] = STATES[slot % len(STATES)]
        slot += 1
        time.sleep(SETTLE_S)
        count, start = sum(done), time.perf_counter()
        time.sleep(SLOT_S)
        rates[state[0]].append((sum(done) - count) / (time.perf_counter() - start))
    batches1, rows1 = counter.snapshot()[:2]
    running[0] = False
    for thread in threads:
        thread.join(10.0)
    model.shutdown()
    if errors or counter.errors:
        raise P.BenchError("; ".join(errors[:3] + counter.errors[:3]))
    mean_batch = (rows1 - rows0) / (batches1 - batches0)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["as is"]
    # µs of GIL time each state adds per item: the worker's per batch, spread over its rows.
    added = {"as is": 0.0, "worker": extra_us / mean_batch, "callers": extra_us}
    cases = [
        {
            "state": name if name == "as is" else f"{name} +{extra_us:g} µs",
            "slots": len(rates[name]),
            "items_per_s": medians[name],
            "vs_as_is": medians[name] / base,
            "gil_us_added_per_item": added[name],
            "loss_pct_per_us": (1 - medians[name] / base) * 100 / added[name]
            if added[name]
            else None,
        }
        for name in STATES
    ]
    return {
        "lib": lib,
        "extra_us": extra_us,
        "seconds": seconds,
        "mean_batch": mean_batch,
        "cases": cases,
    }


def report(result: dict[str, Any], info: dict[str, Any]) -> str:
    rows = [
        [
            case["state"],
            str(case["slots"]),
            C.fmt_num(case["items_per_s"], 0),
            C.fmt_ratio(case["vs_as_is"]),
            C.fmt_num(case["gil_us_added_per_item"], 1),
            "—" if case["loss_pct_per_us"] is None else f"{case['loss_pct_per_us']:.2f}%",
        ]
        for case in result["cases"]
    ]
    table = C.markdown_table(
        ["state", "slots", "items/s", "vs as is", "GIL µs added per item", "loss per µs"],
        rows,
        align="lrrrrr",
    )
    return "\n".join(
        [
            f"## GIL cost in the padding workload ({result['lib']})",
            "",
            f"Machine: {info['cpus']} CPUs, Python {info['python']}, {info['platform']}, "
            f"commit {str(info.get('git_commit', '?'))[:10]}. One interpreter for "
            f"{result['seconds']:g} s, the states alternating every {SLOT_S * 1000:.0f} ms; "
            f"items/s are medians of their slots; mean batch {result['mean_batch']:.1f} rows.",
            "",
            table,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--lib", choices=P.LIBS, default="torch")
    parser.add_argument("--extra-us", type=float, default=50.0, metavar="X")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S")
    C.add_report_arguments(parser, "gil_cost", strict_help=None)  # no targets: no --strict
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.extra_us <= 0 or args.seconds < 3 * (SLOT_S + SETTLE_S):
        parser.error("--extra-us must be positive and --seconds long enough for each state")
    C.verify_impl("ours", None)
    info = C.machine_info()
    result = measure(args.lib, args.extra_us, args.seconds)
    text = report(result, info)
    print(text)
    C.write_text(args.md, text)
    C.write_json(args.json, {"benchmark": "gil_cost", "machine": info, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
