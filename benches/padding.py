"""Padding and throughput of the inference flavour: this package against ``batched==0.1.5``.

16 caller threads each call ``model({"input_ids": ids[None, :], "attention_mask": mask[None, :]})``
with one int64 row of a random length, uniform in 8..512, through
``batched.inference.dynamically(batch_size=32, timeout_ms=5.0, pad_tokens={"input_ids": 0})``.
The rows come from one seeded sequence, the same for every variant and both libraries.

The decorated model does work proportional to the padded batch it is given: it sleeps
``B x L x c`` (``c`` chosen so that a full 32 x 512 batch takes 5 ms; the sleep releases the GIL,
as an accelerator would) and then computes ``(ids * mask).sum(axis=1, keepdims=True)``. Each
caller checks that its result is the sum of its own ids. Inside the model the benchmark
records ``B x L`` against ``mask.sum()``, so the padded fraction is measured the same way for
every implementation; this package's own ``stats.padded_fraction`` is reported next to it.

Variants, for numpy arrays and for CPU torch tensors, each in a fresh interpreter:

* ``0.1.5``: the reference release, in its own venv (see ``_common.ensure_ref_venv``);
* ``ours, default``: no length-aware batching;
* ``ours, sort_by_length``: ``sort_by_length=True``;
* ``ours, sort_by_length + max_batch_tokens``: also ``max_batch_tokens=2 * 512``, a budget of
  two of the longest rows. With 16 blocking callers the queue never holds more than 16 rows,
  so a batch only fills (and leaves before its deadline) by the token budget, and a tight
  budget is what keeps rows of very different lengths apart.

    python benches/padding.py              # short run (~2 minutes)
    python benches/padding.py --full       # longer windows, steadier numbers
    python benches/padding.py --lib numpy --only default --only ref
    python benches/padding.py --only sort_budget --max-batch-tokens 4096
    python benches/padding.py --only ref --also-budget 1280 --also-budget 1536   # a budget sweep
    python benches/padding.py --lib torch --device cuda   # the rows as CUDA tensors

Results: a markdown report on stdout and in benches/results/padding.md, JSON in
benches/results/padding.json.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SCRIPT = Path(__file__).resolve()

THREADS = 16
BATCH_SIZE = 32
TIMEOUT_MS = 5.0
MIN_LEN = 8
MAX_LEN = 512
SEED = 20_240_515
# The simulated model: a full batch (BATCH_SIZE x MAX_LEN padded positions) takes this long.
FULL_BATCH_MODEL_S = 5e-3
MAX_BATCH_TOKENS = 2 * MAX_LEN

LIBS = ("numpy", "torch")


# --------------------------------------------------------------------------------------------
# Worker side (``batched`` is whichever implementation this interpreter imported)
# --------------------------------------------------------------------------------------------


def thread_lengths(seed: int, threads: int, per_thread: int) -> list[list[int]]:
    """The seeded row lengths, ``per_thread`` for each caller thread; each cycles over its own."""
    rng = random.Random(seed)
    flat = [rng.randint(MIN_LEN, MAX_LEN) for _ in range(threads * per_thread)]
    return [flat[k * per_thread : (k + 1) * per_thread] for k in range(threads)]


Row = tuple[Any, Any, int]  # (ids of shape (1, L), mask of shape (1, L), expected sum)


def make_rows(
    lib: str, seed: int, threads: int, per_thread: int, device: str = "cpu"
) -> list[list[Row]]:
    """Every thread's rows, built before anything is timed: int64 ids in 1..29 999 (seeded, so
    identical for every variant), an all-ones mask, and the sum each call must return. Torch
    rows live on ``device``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[list[Row]] = []
    for lengths in thread_lengths(seed, threads, per_thread):
        rows: list[Row] = []
        for length in lengths:
            ids = rng.integers(1, 30_000, size=(1, length), dtype=np.int64)
            mask = np.ones((1, length), dtype=np.int64)
            expected = int(ids.sum())
            if lib == "torch":
                import torch

                on_device = (torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
                rows.append((*on_device, expected))
            else:
                rows.append((ids, mask, expected))
        out.append(rows)
    return out


class PadCounter:
    """What the model saw, updated inside it: batches, rows, padded and real positions, and
    the seconds it spent in its simulated work."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches = 0
        self.rows = 0
        self.padded = 0
        self.real = 0
        self.model_s = 0.0
        self.errors: list[str] = []

    def add(self, rows: int, padded: int, real: int, model_s: float) -> None:
        with self.lock:
            self.batches += 1
            self.rows += rows
            self.padded += padded
            self.real += real
            self.model_s += model_s

    def snapshot(self) -> tuple[int, int, int, int, float]:
        with self.lock:
            return self.batches, self.rows, self.padded, self.real, self.model_s


def make_model(
    batched: ModuleType, lib: str, options: dict[str, Any], counter: PadCounter, s_per_pos: float
) -> Any:
    """The decorated simulated model."""
    if lib == "torch":

        def reduce(ids: Any, mask: Any) -> Any:
            return (ids * mask).sum(dim=1, keepdim=True)

    else:

        def reduce(ids: Any, mask: Any) -> Any:
            return (ids * mask).sum(axis=1, keepdims=True)

    settings = {
        "batch_size": BATCH_SIZE,
        "timeout_ms": TIMEOUT_MS,
        # 0.1.5's keyword (ours accepts it too, as well as ``pad_token``).
        "pad_tokens": {"input_ids": 0},
        **options,
    }
    decorate = batched.inference.dynamically(**settings)

    def model(features: dict[str, Any]) -> Any:
        ids, mask = features["input_ids"], features["attention_mask"]
        if tuple(ids.shape) != tuple(mask.shape) or len(ids.shape) != 2:
            counter.errors.append(
                f"model got input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)}"
            )
        rows, length = int(ids.shape[0]), int(ids.shape[1])
        real = int(mask.sum())
        work = rows * length * s_per_pos
        time.sleep(work)
        out = reduce(ids, mask)
        counter.add(rows, rows * length, real, work)
        return out

    return decorate(model)


def result_value(got: Any) -> int:
    """The one number a call returns; raises BenchError unless it has shape (1, 1)."""
    shape = tuple(getattr(got, "shape", ()))
    if shape != (1, 1):
        raise C.BenchError(f"returned {type(got).__name__} of shape {shape}, expected (1, 1)")
    return int(got.reshape(-1)[0])


def run_variant(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """16 callers for warm-up plus the measured window; counts what completes in the window."""
    lib, n_threads = p["lib"], p["threads"]
    if lib == "torch":
        import torch

        torch.set_num_threads(1)  # the same for both implementations; tiny ops, 2 cores
    all_rows = make_rows(lib, p["seed"], n_threads, p["rows_per_thread"], p["device"])
    counter = PadCounter()
    model = make_model(
        batched, lib, p["options"], counter, FULL_BATCH_MODEL_S / (BATCH_SIZE * MAX_LEN)
    )
    ids, mask, expected = all_rows[0][0]
    got = result_value(model({"input_ids": ids, "attention_mask": mask}))
    if got != expected:
        raise C.BenchError(f"first call returned {got}, expected {expected}")

    callers = C.CallerThreads(n_threads)
    running, start, errors = callers.running, callers.start, callers.errors

    def caller(k: int) -> None:
        rows, my_ends, my_lats = all_rows[k], callers.ends[k], callers.lats[k]
        clock = time.perf_counter
        i = 0
        start.wait()
        try:
            while running[0]:
                ids, mask, expected = rows[i % len(rows)]
                t = clock()
                out = model({"input_ids": ids, "attention_mask": mask})
                e = clock()
                got = result_value(out)
                if got != expected:
                    errors.append(
                        f"thread {k} call {i} (length {ids.shape[1]}): got {got}, "
                        f"expected {expected}"
                    )
                    return
                my_ends.append(e)
                my_lats.append(e - t)
                i += 1
        except BaseException as exc:  # report it, do not hang the others' join
            errors.append(f"thread {k} call {i}: {type(exc).__name__}: {exc}")

    def mark() -> tuple[float, float, tuple[int, int, int, int, float]]:
        return time.perf_counter(), time.process_time(), counter.snapshot()

    (t0, cpu0, snap0), (t1, cpu1, snap1), stuck = callers.run(caller, p, mark)
    problems = errors[:5] + counter.errors[:5]
    if stuck:
        problems.append(
            f"{stuck} of {n_threads} caller threads still blocked in model(...) "
            f"{p['join_s']} s after the run ended"
        )
    if problems:
        raise C.BenchError("; ".join(problems))
    stats = C.impl_stats(model)
    C.shut(model)

    window = callers.window(t0, t1)
    items, wall = len(window), t1 - t0
    lat = C.latency_summary(window)
    batches, rows, padded, real, model_s = (b - a for a, b in zip(snap0, snap1, strict=True))
    own = stats.get("padded_fraction")
    return {
        "items_per_s": items / wall,
        "p50_ms": lat["p50_us"] / 1e3,
        "p99_ms": lat["p99_us"] / 1e3,
        "padded_fraction": (padded - real) / padded if padded else math.nan,
        "stats_padded_fraction": own if C.is_number(own) else math.nan,
        "mean_batch": rows / batches if batches else math.nan,
        "mean_padded_len": padded / rows if rows else math.nan,
        "model_busy": model_s / wall,
        "cpu_us_per_item": (cpu1 - cpu0) / items * 1e6 if items else math.nan,
        "items": items,
        "batches": batches,
        "window_s": wall,
        "latency": lat,
        "impl_stats": stats,
    }


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    import batched
    import batched.inference  # 0.1.5 imports it from its __init__; ours may not

    return run_variant(batched, payload["params"])


# --------------------------------------------------------------------------------------------
# The plan (parent side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    id: str
    impl: str
    label: str
    options: dict[str, Any]
    length_aware: bool = False


def make_variants(
    max_batch_tokens: int = MAX_BATCH_TOKENS, more_budgets: tuple[int, ...] = ()
) -> list[Variant]:
    """The variants; each of `more_budgets` adds a ``sort_budget_<N>`` variant with that budget."""
    return [
        Variant("ref", "ref", C.REF_VERSION, {}),
        Variant("default", "ours", "ours, default", {}),
        Variant("sort", "ours", "ours, sort_by_length", {"sort_by_length": True}, True),
        budget_variant("sort_budget", max_batch_tokens),
        Variant(
            "sort_budget_auto",
            "ours",
            f'ours, sort_by_length + max_batch_tokens={max_batch_tokens} + timeout_ms="auto"',
            {
                "sort_by_length": True,
                "max_batch_tokens": max_batch_tokens,
                "timeout_ms": "auto",
                "max_timeout_ms": TIMEOUT_MS,
            },
            True,
        ),
        *(budget_variant(f"sort_budget_{budget}", budget) for budget in more_budgets),
    ]


def budget_variant(variant_id: str, budget: int) -> Variant:
    return Variant(
        variant_id,
        "ours",
        f"ours, sort_by_length + max_batch_tokens={budget}",
        {"sort_by_length": True, "max_batch_tokens": budget},
        True,
    )


VARIANT_IDS = [v.id for v in make_variants()]


@dataclass
class Case:
    lib: str
    variant: Variant
    params: dict[str, Any]
    expected_s: float
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.lib}_{self.variant.id}"


PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"warmup_s": 1.0, "duration_s": 8.0, "rows_per_thread": 256},
    "full": {"warmup_s": 2.0, "duration_s": 25.0, "rows_per_thread": 1024},
}


def build_cases(
    profile: dict[str, Any], libs: list[str], variants: list[Variant], device: str = "cpu"
) -> list[Case]:
    cases = []
    for lib in libs:
        for variant in variants:
            params = {
                "lib": lib,
                "threads": THREADS,
                "seed": SEED,
                "options": variant.options,
                "warmup_s": profile["warmup_s"],
                "duration_s": profile["duration_s"],
                "rows_per_thread": profile["rows_per_thread"],
                "device": device,
                "join_s": 10.0,
            }
            cases.append(
                Case(lib, variant, params, profile["warmup_s"] + profile["duration_s"] + 5)
            )
    return cases


def metric(case: Case | None, key: str) -> Any:
    return None if case is None else C.metric(case.result, key)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render_table(cases: list[Case]) -> str:
    headers = [
        "library",
        "variant",
        "items/s",
        f"vs {C.REF_VERSION}",
        "p50 ms",
        "p99 ms",
        "padded fraction",
        "stats.padded_fraction",
        "mean batch",
        "model busy",
    ]
    align = ["l", "l", *("r" for _ in headers[2:])]
    refs = {c.lib: c for c in cases if c.variant.impl == "ref"}
    rows = []
    for case in cases:
        row = [case.lib, case.variant.label]
        if "error" in case.result:
            rows.append([*row, "ERROR", *("" for _ in headers[3:])])
            continue
        ratio = (
            ""
            if case.variant.impl == "ref"
            else C.fmt_ratio(
                C.gain(metric(case, "items_per_s"), metric(refs.get(case.lib), "items_per_s"), True)
            )
        )
        busy = metric(case, "model_busy")
        rows.append(
            [
                *row,
                C.fmt_num(metric(case, "items_per_s"), 0),
                ratio,
                C.fmt_num(metric(case, "p50_ms"), 2),
                C.fmt_num(metric(case, "p99_ms"), 2),
                C.fmt_num(metric(case, "padded_fraction"), 3),
                "—"
                if case.variant.impl == "ref"
                else C.fmt_num(metric(case, "stats_padded_fraction"), 3),
                C.fmt_num(metric(case, "mean_batch"), 1),
                f"{busy:.0%}" if C.is_number(busy) else "—",
            ]
        )
    return C.markdown_table(headers, rows, align)


def render_report(cases: list[Case], machine: dict[str, Any], run_desc: str) -> str:
    errors = [(f"{c.lib}, {c.variant.label}", c.result) for c in cases if "error" in c.result]
    out = [
        f"## batched padding: ours vs {C.REF_VERSION} ({run_desc})",
        "",
        f"{C.machine_line(machine)}; every variant in a fresh interpreter.",
        "",
        f"{THREADS} caller threads, each sending one int64 row at a time (`input_ids` and "
        f"`attention_mask` of shape (1, L), L uniform in {MIN_LEN}..{MAX_LEN}, one seeded "
        f"sequence for all variants); `batch_size={BATCH_SIZE}`, `timeout_ms={TIMEOUT_MS:g}`. "
        f"The model sleeps B x L x {FULL_BATCH_MODEL_S * 1e3:g} ms / ({BATCH_SIZE} x {MAX_LEN}) "
        "and returns `(ids * mask).sum(axis=1, keepdims=True)`; every result is checked.",
        "",
        "Padded fraction: measured inside the model, 1 - mask.sum() / (B x L) over the batches "
        "of the measured window, the same for every implementation. stats.padded_fraction: "
        "ours' own figure, over the whole run (warm-up included). Model busy: share of the "
        "window spent in the model's simulated work.",
        "",
        render_table(cases),
        *C.errors_markdown(errors),
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def parent_main(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else "quick"
    profile = dict(PROFILES[profile_name])
    if args.duration is not None:
        profile["duration_s"] = args.duration
    libs = list(LIBS) if args.lib == "both" else [args.lib]
    if args.device != "cpu":
        if args.lib == "numpy":
            C.log("--device takes torch rows: use --lib torch")
            return 2
        libs = ["torch"]
    more_budgets = tuple(args.also_budget or ())
    swept = {budget_variant(f"sort_budget_{b}", b).id for b in more_budgets}
    variants = [
        v
        for v in make_variants(args.max_batch_tokens, more_budgets)
        if not args.only or v.id in args.only or v.id in swept
    ]
    if not variants:
        C.log(f"no variant matches --only {args.only}")
        return 2
    cases = build_cases(profile, libs, variants, args.device)

    expect = C.expected_locations([v.impl for v in variants])

    started = time.perf_counter()
    infos: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {c.id: [] for c in cases}
    for rep in range(args.repeat):
        for case in cases:
            impl = case.variant.impl
            watchdog = case.expected_s * 3 + 60
            payload = {"params": case.params, "expect_dir": expect[impl], "watchdog_s": watchdog}
            t = time.perf_counter()
            result = C.run_worker(SCRIPT, impl, payload, timeout_s=watchdog + 60)
            runs[case.id].append(result)
            tag = f"[{case.lib}, {case.variant.label}{f' #{rep + 1}' if args.repeat > 1 else ''}]"
            if "error" in result:
                C.log(f"{tag}: ERROR {result['error']}\n{result.get('stderr', '')}")
            else:
                infos.setdefault(impl, result.get("info"))
                m = result["metrics"]
                C.log(
                    f"{tag}: {C.fmt_num(m['items_per_s'], 0)} items/s, "
                    f"p50 {C.fmt_num(m['p50_ms'], 2)} ms, p99 {C.fmt_num(m['p99_ms'], 2)} ms, "
                    f"padded {C.fmt_num(m['padded_fraction'], 3)}, "
                    f"batch {C.fmt_num(m['mean_batch'], 1)}  ({time.perf_counter() - t:.1f} s)"
                )
    for case in cases:
        case.result = C.combine_runs(runs[case.id])

    machine = C.machine_info()
    report = render_report(
        cases,
        machine,
        f"{profile_name} run"
        + (f", median of {args.repeat} runs" if args.repeat > 1 else "")
        + f", {time.perf_counter() - started:.0f} s",
    )
    C.write_results(
        args,
        report,
        {
            "benchmark": "padding",
            "profile": profile_name,
            "profile_settings": profile,
            "repeat": args.repeat,
            "setup": {
                "threads": THREADS,
                "batch_size": BATCH_SIZE,
                "timeout_ms": TIMEOUT_MS,
                "min_len": MIN_LEN,
                "max_len": MAX_LEN,
                "seed": SEED,
                "full_batch_model_s": FULL_BATCH_MODEL_S,
            },
            "machine": machine,
            "implementations": {
                i: {"python": str(C.worker_python(i)), **(infos.get(i) or {})} for i in expect
            },
            "cases": [
                {
                    "id": c.id,
                    "lib": c.lib,
                    "variant": c.variant.id,
                    "label": c.variant.label,
                    "impl": c.variant.impl,
                    "options": c.variant.options,
                    "params": c.params,
                    "result": c.result,
                }
                for c in cases
            ],
        },
    )
    return C.exit_status(args, any("error" in c.result for c in cases))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = C.worker_entry(argv, SCRIPT, measure)
    if status is not None:
        return status

    parser = C.make_parser(__doc__, "short windows", "longer windows, steadier numbers")
    parser.add_argument("--lib", choices=["both", *LIBS], default="both")
    parser.add_argument(
        "--device", default="cpu", help="where the torch rows live (cuda: implies --lib torch)"
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="override the profile's measured seconds"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=VARIANT_IDS,
        help="run only these variants (repeatable)",
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=MAX_BATCH_TOKENS,
        metavar="N",
        help=f"max_batch_tokens of the sort_budget variant (default {MAX_BATCH_TOKENS})",
    )
    parser.add_argument(
        "--also-budget",
        action="append",
        type=int,
        metavar="N",
        help="also run sort_by_length with max_batch_tokens=N (repeatable; kept by any --only)",
    )
    C.add_report_arguments(
        parser, "padding", repeat_help="run every variant N times (interleaved) and report medians"
    )
    return parent_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
