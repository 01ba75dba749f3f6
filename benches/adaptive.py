"""``timeout_ms="auto"`` against fixed timeouts and ``batched==0.1.5`` under Poisson traffic.

A simulated model whose batch of ``n`` items costs ``a + b·n`` (a sleep, which releases the GIL
as an accelerator would) is decorated with ``batched.dynamically(batch_size=32, ...)`` and fed
by an open-loop Poisson arrival process: arrivals do not wait for results, so a slow setting
builds a backlog rather than slowing its own traffic down. Two cost curves:

* ``flat`` (GPU-like): a = 5 ms, b = 0.05 ms/item; a full batch of 32 takes 6.6 ms, so the
  model serves at most about 4,850 items/s;
* ``steep``: a = 0.5 ms, b = 0.5 ms/item; a full batch takes 16.5 ms, at most about 1,940/s.

For every (curve, rate), each setting runs in a fresh interpreter on the same seeded arrival
times: this package with ``timeout_ms`` 0, 1, 5 and 20, this package with ``timeout_ms="auto"``
(``max_timeout_ms`` 10, the default), and 0.1.5 with ``timeout_ms=5`` (its default; ``--full``
adds 0.1.5 at 1 ms). The settings of one (curve, rate) run back to back in a rotating order,
so load from elsewhere on the machine hits them alike.

Noise: on a shared machine, a process that is not scheduled for tens of milliseconds sets
the p99 of whatever case it happens to. The load generator is the detector: a run in which it
fell more than 2 ms behind its schedule (p99 over the items), at a rate the model can serve, was
disturbed, and is tried again (``--retries``, default 1; every try of every setting of a
(curve, rate) sees the same arrivals). A case's figures are the medians of its undisturbed
runs (``--repeat N`` wants N of them; the full run wants 3), or of all its runs, marked ``†``,
when every try was disturbed.

Load generator (thread API, the same for both libraries): the child's main thread holds the
precomputed arrival times and, at each one, hands the item's index to a pool of caller threads
(a ``queue.SimpleQueue``); a caller calls ``f(item)``, which blocks it until the result. Every
arrival whose time has come is released at once, so one generator thread keeps up at any rate
the process can run at (several generator threads would only contend for the GIL). Latency is
measured from the *scheduled* arrival to the result, so a backlog, in the model or in the
generator, counts; "gen lag" (scheduled arrival to the moment ``f`` was called) shows how far the
generator itself fell behind. With more than ``--pool`` calls outstanding, arrivals wait in the
hand-off queue, and that wait counts too.

Each case: a warm-up (arrivals, not measured; ``"auto"`` learns its cost curve and rate
here), then the measured window of arrivals, then up to ``drain`` seconds for the outstanding
calls to finish. Latency percentiles cover the items that arrived in the window; an item still
unfinished at the cut-off counts with its latency so far (a lower bound), and the case is
marked saturated (``sat``). Throughput = items completed from the window's start until the last
completion (or the cut-off) divided by that time.

The model's sleeps overshoot (timer slack, wake-up latency, the GIL). The model measures each
batch's real time and takes the running median of its recent overshoots off the next request,
so the effective cost tracks the nominal curve; the report gives the effective a and b fitted
through the median time of each batch size over the measured windows.

The report sets ``"auto"`` against the best fixed timeout at each curve and rate: p99 latency
and throughput, each as a ratio.

    python benches/adaptive.py              # short run (~5-8 minutes)
    python benches/adaptive.py --full       # all 8 rates, longer windows, 0.1.5 at 1 ms too
    python benches/adaptive.py --repeat 3   # medians of 3 undisturbed runs per case
    python benches/adaptive.py --curve flat --rate 1000 --rate 2000 --only auto --only t0
    python benches/adaptive.py --from-json benches/results/adaptive.json   # re-render only

Results: a markdown report on stdout and in benches/results/adaptive.md, JSON in
benches/results/adaptive.json, a chart in benches/results/adaptive.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import random
import sys
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SCRIPT = Path(__file__).resolve()

BATCH_SIZE = 32
AUTO_MAX_TIMEOUT_MS = 10.0
SEED = 20_240_808
POOL = 256
ALL_RATES = (10, 100, 500, 1000, 2000, 5000, 10_000, 20_000)
QUICK_RATES = (10, 100, 500, 1000, 2000, 5000)

# A case serving under this share of its offered rate (or with items unfinished at the
# cut-off) is saturated: its latency is set by the growing backlog, not by the dispatch rule.
SATURATED_BELOW = 0.95
# A run whose load generator fell behind its schedule by more than this (p99 over the items)
# while the model kept up was disturbed by the machine; it is retried (see --retries).
LAG_LIMIT_MS = 2.0


@dataclass(frozen=True)
class Curve:
    id: str
    a_s: float
    b_s: float
    label: str

    def cost(self, n: int) -> float:
        return self.a_s + self.b_s * n

    def capacity(self, batch_size: int = BATCH_SIZE) -> float:
        """Items per second with every batch full."""
        return batch_size / self.cost(batch_size)


CURVES = {
    "flat": Curve("flat", 5e-3, 5e-5, "flat (GPU-like)"),
    "steep": Curve("steep", 5e-4, 5e-4, "steep"),
}


# --------------------------------------------------------------------------------------------
# Worker side (``batched`` is whichever implementation this interpreter imported)
# --------------------------------------------------------------------------------------------


def set_timer_slack(nanos: int = 1000) -> None:
    """Asks Linux to wake this thread within ``nanos`` of its sleeps' deadlines (50 µs by
    default). Used only on the benchmark's own generator thread, never on a library's."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_timerslack = 29
        libc.prctl(pr_set_timerslack, ctypes.c_ulong(nanos), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def sleep_overshoot(requests: tuple[float, ...] = (5e-4, 2e-3), reps: int = 15) -> float:
    """Median seconds by which ``time.sleep`` overshoots on this thread, as measured now."""
    clock = time.perf_counter
    over = []
    for _ in range(reps):
        for req in requests:
            t = clock()
            time.sleep(req)
            over.append(clock() - t - req)
    return C.percentile(over, 50)


class SimModel:
    """The batch function's work: sleeps ``a + b·n`` seconds for a batch of ``n`` items, less
    the running median of its recent sleep overshoots, and logs what each batch really took."""

    def __init__(self, a_s: float, b_s: float, overshoot_s: float, memory: int = 31) -> None:
        self.a_s, self.b_s = a_s, b_s
        self.overshoots: deque[float] = deque([overshoot_s], maxlen=memory)
        self.starts = array("d")
        self.sizes = array("l")
        self.elapsed = array("d")

    def __call__(self, items: list[Any]) -> list[Any]:
        n = len(items)
        nominal = self.a_s + self.b_s * n
        over = sorted(self.overshoots)
        request = max(0.0, nominal - over[len(over) // 2])
        clock = time.perf_counter
        t = clock()
        time.sleep(request)
        took = clock() - t
        self.overshoots.append(took - request)
        self.starts.append(t)
        self.sizes.append(n)
        self.elapsed.append(took)
        return items


def arrival_offsets(seed: int, rate: float, seconds: float) -> array[float]:
    """Poisson arrival times in ``[0, seconds)``: exponential gaps of mean ``1 / rate``."""
    rng = random.Random(seed)
    out = array("d")
    t = rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return out


COUNTERS = (
    "total_processed",
    "total_batches",
    "full_batches",
    "deadline_batches",
    "idle_batches",
    "adaptive_batches",
    "drain_batches",
)


def run_case(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """One setting at one rate: warm-up, measured window, drain; see the module docstring."""
    a_s, b_s, rate = p["a_s"], p["b_s"], p["rate"]
    warmup_s, measure_s = p["warmup_s"], p["measure_s"]
    offsets = arrival_offsets(p["seed"], rate, warmup_s + measure_s)
    n = len(offsets)

    calibrated = sleep_overshoot()
    model = SimModel(a_s, b_s, calibrated)

    def simulated_model(items: list[int]) -> list[int]:
        return model(items)

    f = batched.dynamically(batch_size=p["batch_size"], **p["options"])(simulated_model)
    for probe in (-1, -2):  # the worker exists and works before anything is timed
        got = f(probe)
        if got != probe:
            raise C.BenchError(f"f({probe}) returned {got!r}")

    nan = math.nan
    starts = array("d", [nan]) * n
    ends = array("d", [nan]) * n
    handoff: queue.SimpleQueue[int] = queue.SimpleQueue()
    done: deque[int] = deque()
    errors: list[str] = []

    def caller() -> None:
        clock, get = time.perf_counter, handoff.get
        while True:
            i = get()
            if i < 0:
                return
            s = clock()
            try:
                got = f(i)
            except BaseException as exc:  # report it; the others go on
                errors.append(f"f({i}): {type(exc).__name__}: {exc}")
                continue
            e = clock()
            starts[i] = s
            ends[i] = e
            if got != i:
                errors.append(f"f({i}) returned {got!r}")
            done.append(i)

    ready = threading.Barrier(p["pool"] + 1)

    def pooled() -> None:
        ready.wait()
        caller()

    for _ in range(p["pool"]):
        threading.Thread(target=pooled, daemon=True).start()
    ready.wait()
    set_timer_slack()

    clock, sleep, put = time.perf_counter, time.sleep, handoff.put
    t0 = clock() + 0.02
    w0, w1 = t0 + warmup_s, t0 + warmup_s + measure_s
    snap0: dict[str, Any] | None = None
    cpu0 = batches0 = 0.0
    i = 0
    while i < n or snap0 is None:
        now = clock()
        while i < n and t0 + offsets[i] <= now:
            put(i)
            i += 1
        if snap0 is None and now >= w0:
            snap0, cpu0, batches0 = C.impl_stats(f), time.process_time(), len(model.sizes)
        wake = t0 + offsets[i] if i < n else w1
        if snap0 is None:
            wake = min(wake, w0)
        delay = wake - clock()
        if delay > 0:
            sleep(delay)
    if clock() < w1:
        sleep(w1 - clock())
    give_up = w1 + p["drain_s"]
    while len(done) < n and clock() < give_up:
        sleep(0.002)
    cutoff = clock()
    cpu1 = time.process_time()
    snap1 = C.impl_stats(f)
    if errors:
        raise C.BenchError("; ".join(errors[:5]))

    # Latency of the window's arrivals, from the scheduled arrival; unfinished ones censored.
    lat, lag, call = [], [], []
    censored = 0
    first = next((k for k in range(n) if t0 + offsets[k] >= w0), n)
    for k in range(first, n):
        arrived = t0 + offsets[k]
        if math.isnan(ends[k]):
            censored += 1
            lat.append(cutoff - arrived)
            if not math.isnan(starts[k]):
                lag.append(starts[k] - arrived)
                call.append(cutoff - starts[k])
        else:
            lat.append(ends[k] - arrived)
            lag.append(starts[k] - arrived)
            call.append(ends[k] - starts[k])
    finished = [e for e in ends if not math.isnan(e)]
    last_end = max(finished, default=w1)
    span = max(w1, last_end if censored == 0 else cutoff) - w0
    completed = sum(1 for e in finished if e >= w0)
    throughput = completed / span
    offered = (n - first) / measure_s
    summary = C.latency_summary(lat)
    lag_summary = C.latency_summary(lag)
    call_summary = C.latency_summary(call)
    saturated = censored > 0 or throughput < SATURATED_BELOW * offered
    capacity = p["batch_size"] / (a_s + b_s * p["batch_size"])

    # What the model really did in the window, and its effective cost curve.
    b_start = int(batches0)
    sizes = model.sizes[b_start:]
    took = model.elapsed[b_start:]
    items = sum(sizes)
    overshoot = [t - (a_s + b_s * m) for m, t in zip(sizes, took, strict=True)]
    by_size: dict[int, list[float]] = {}
    for m, t in zip(sizes, took, strict=True):
        by_size.setdefault(m, []).append(t)

    window_stats: dict[str, float] = {}
    if snap0 is not None:
        for key in COUNTERS:
            if C.is_number(snap0.get(key)) and C.is_number(snap1.get(key)):
                window_stats[f"st_{key}"] = float(snap1[key] - snap0[key])
        for key in ("queue_wait_p50", "queue_wait_p99", "batch_time_p50", "batch_time_p99"):
            if C.is_number(snap1.get(key)):
                window_stats[f"st_{key}_ms"] = float(snap1[key]) * 1e3

    return {
        "items_per_s": throughput,
        "offered_per_s": offered,
        "p50_ms": summary["p50_us"] / 1e3,
        "p99_ms": summary["p99_us"] / 1e3,
        "mean_ms": summary["mean_us"] / 1e3,
        "max_ms": summary["max_us"] / 1e3,
        "call_p50_ms": call_summary["p50_us"] / 1e3,
        "call_p99_ms": call_summary["p99_us"] / 1e3,
        "gen_lag_p50_ms": lag_summary["p50_us"] / 1e3,
        "gen_lag_p99_ms": lag_summary["p99_us"] / 1e3,
        "censored": float(censored),
        "saturated": 1.0 if saturated else 0.0,
        # Offered more than the model can serve even with every batch full.
        "beyond_capacity": 1.0 if offered > SATURATED_BELOW * capacity else 0.0,
        "window_arrivals": float(n - first),
        "completed": float(completed),
        "span_s": span,
        "batches": float(len(sizes)),
        "mean_batch": items / len(sizes) if sizes else nan,
        "single_batches": sum(1 for m in sizes if m == 1) / len(sizes) if sizes else nan,
        "full_share": sum(1 for m in sizes if m >= p["batch_size"]) / len(sizes) if sizes else nan,
        "model_busy": sum(took) / span,
        "cpu_share": (cpu1 - cpu0) / (cutoff - w0),
        "overshoot_p50_us": C.percentile(overshoot, 50) * 1e6,
        "overshoot_p99_us": C.percentile(overshoot, 99) * 1e6,
        "calibrated_overshoot_us": calibrated * 1e6,
        # For the parent's fit of the effective cost: per batch size, how many batches and
        # their median time (medians, so that a batch caught in a machine stall does not count).
        "cost_by_size": {
            str(m): [len(ts), round(C.percentile(ts, 50), 7)] for m, ts in sorted(by_size.items())
        },
        **window_stats,
    }


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    import batched

    return run_case(batched, payload["params"])


# --------------------------------------------------------------------------------------------
# The plan (parent side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    id: str
    impl: str
    label: str
    options: dict[str, Any]
    fixed: bool  # one of ours' fixed timeouts, which "auto" is compared against


def make_settings() -> list[Setting]:
    fixed = [
        Setting(f"t{ms:g}", "ours", f"{ms:g} ms", {"timeout_ms": float(ms)}, True)
        for ms in (0, 1, 5, 20)
    ]
    auto = Setting(
        "auto",
        "ours",
        "auto",
        {"timeout_ms": "auto", "max_timeout_ms": AUTO_MAX_TIMEOUT_MS},
        False,
    )
    refs = [
        Setting(f"ref{ms:g}", "ref", f"{C.REF_VERSION} {ms:g} ms", {"timeout_ms": float(ms)}, False)
        for ms in (5, 1)
    ]
    return [*fixed, auto, *refs]


SETTING_IDS = [s.id for s in make_settings()]


@dataclass
class Case:
    curve: Curve
    rate: int
    setting: Setting
    params: dict[str, Any]
    expected_s: float
    runs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.curve.id}_{self.rate}_{self.setting.id}"


PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "rates": QUICK_RATES,
        "warmup_s": 0.5,
        "measure_s": 1.5,
        "min_items": 30,
        "drain_s": 1.0,
        "settings": ["t0", "t1", "t5", "t20", "auto", "ref5"],
        "repeat": 1,
        "retries": 1,
    },
    "full": {
        "rates": ALL_RATES,
        "warmup_s": 1.0,
        "measure_s": 5.0,
        "min_items": 200,
        "drain_s": 2.0,
        "settings": SETTING_IDS,
        "repeat": 3,
        "retries": 3,
    },
}


def build_cases(
    profile: dict[str, Any], curves: list[Curve], rates: list[int], settings: list[Setting]
) -> list[Case]:
    cases = []
    for rate in rates:
        measure_s = max(profile["measure_s"], profile["min_items"] / rate)
        for curve in curves:
            for setting in settings:
                params = {
                    "a_s": curve.a_s,
                    "b_s": curve.b_s,
                    "rate": rate,
                    "seed": SEED + rate,
                    "warmup_s": profile["warmup_s"],
                    "measure_s": measure_s,
                    "drain_s": profile["drain_s"],
                    "pool": profile["pool"],
                    "batch_size": BATCH_SIZE,
                    "options": setting.options,
                }
                expected = 1.0 + profile["warmup_s"] + measure_s + profile["drain_s"]
                cases.append(Case(curve, rate, setting, params, expected))
    return cases


def metric(case: Case | None, key: str) -> Any:
    return None if case is None else C.metric(case.result, key)


def is_saturated(case: Case | None) -> bool:
    value = metric(case, "saturated")
    return C.is_number(value) and value >= 0.5


def is_censored(case: Case | None) -> bool:
    value = metric(case, "censored")
    return C.is_number(value) and value > 0


def is_clean(run: dict[str, Any]) -> bool:
    """A run is undisturbed unless the load generator fell behind its schedule (p99 of the
    items' gen lag above ``LAG_LIMIT_MS``): then the machine stalled the process. Beyond the
    model's capacity the lag is the backlog's, expected, so such a saturated run counts."""
    if "error" in run:
        return False
    m = run["metrics"]
    if m.get("saturated") and m.get("beyond_capacity"):
        return True
    return not (m.get("gen_lag_p99_ms", math.inf) > LAG_LIMIT_MS)


def is_disturbed(case: Case | None) -> bool:
    value = metric(case, "disturbed")
    return C.is_number(value) and value > 0


def aggregate(case: Case) -> None:
    """The case's figures: medians over its undisturbed runs, or over all of them (marked
    disturbed) when every try was disturbed. Any failed run makes the case a failure."""
    clean = [r for r in case.runs if is_clean(r)]
    failed = any("error" in r for r in case.runs)
    combined = C.combine_runs(case.runs if failed or not clean else clean)
    result = {k: v for k, v in combined.items() if k not in ("runs", "metrics")}
    if len(case.runs) > 1:
        result["runs"] = case.runs  # every try in the JSON, not only those used
    if "metrics" in combined:
        result["metrics"] = {
            **combined["metrics"],
            "tries": float(len(case.runs)),
            "undisturbed_runs": float(len(clean)),
            "disturbed": 0.0 if clean else 1.0,
        }
    case.result = result


def all_runs(case: Case) -> list[dict[str, Any]]:
    return [r for r in case.runs if "error" not in r]


def weighted_median(pairs: list[tuple[float, float]]) -> float:
    """The value at half the total weight of ``(value, weight)`` pairs."""
    pairs = sorted(pairs)
    half = sum(w for _, w in pairs) / 2
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= half:
            return value
    return math.nan


def effective_cost(cases: list[Case]) -> dict[str, float]:
    """The model's real cost curve over the measured windows of ``cases``: for each batch size,
    the median time of its batches (the count-weighted median of the runs' medians), then a
    least-squares line through those, each size weighted by its number of batches."""
    per_size: dict[int, list[tuple[float, float]]] = {}
    overshoots = []
    for case in cases:
        for run in all_runs(case):
            m = run["metrics"]
            for size, (count, median) in (m.get("cost_by_size") or {}).items():
                if C.is_number(median):
                    per_size.setdefault(int(size), []).append((median, count))
            if C.is_number(m.get("overshoot_p50_us")):
                overshoots.append(m["overshoot_p50_us"])
    points = [(n, weighted_median(v), sum(w for _, w in v)) for n, v in per_size.items()]
    total = sum(w for *_, w in points)
    out: dict[str, float] = {
        "batches": total,
        "sizes": float(len(points)),
        "overshoot_p50_us": C.percentile(overshoots, 50),
    }
    if len(points) < 2:
        return out
    mean_n = sum(n * w for n, _, w in points) / total
    mean_t = sum(t * w for _, t, w in points) / total
    var_n = sum(w * (n - mean_n) ** 2 for n, _, w in points) / total
    cov = sum(w * (n - mean_n) * (t - mean_t) for n, t, w in points) / total
    if var_n > 1e-9:
        out["b_s"] = cov / var_n
        out["a_s"] = mean_t - out["b_s"] * mean_n
    return out


def best_fixed(group: dict[str, Case], key: str, higher: bool) -> tuple[Case | None, Any]:
    best: Case | None = None
    for case in group.values():
        if not case.setting.fixed or not C.is_number(metric(case, key)):
            continue
        if best is None or (metric(case, key) > metric(best, key)) == higher:
            best = case
    return best, metric(best, key)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cell(case: Case | None, key: str, digits: int | None = None) -> str:
    if case is None:
        return "—"
    if "error" in case.result:
        return "ERROR"
    value = metric(case, key)
    text = C.fmt_num(value, digits) if value is not None else "—"
    if key == "p99_ms" and is_censored(case):
        text = "≥" + text
    if key == "p99_ms" and is_disturbed(case):
        text += " †"
    if is_saturated(case) and key in ("p99_ms", "items_per_s"):
        text += " sat"
    return text


def render_summary(cases: list[Case], curve: Curve, settings: list[Setting], key: str) -> str:
    rates = sorted({c.rate for c in cases if c.curve.id == curve.id})
    by = {(c.rate, c.setting.id): c for c in cases if c.curve.id == curve.id}
    p99 = key != "items_per_s"
    headers = ["rate /s", *(s.label for s in settings)]
    fixed_present = any(s.fixed for s in settings) and any(s.id == "auto" for s in settings)
    if fixed_present:
        headers += ["best fixed", "auto / best"]
    rows = []
    for rate in rates:
        row = [f"{rate:,}"]
        for s in settings:
            row.append(cell(by.get((rate, s.id)), key, 2 if p99 else 0))
        if fixed_present:
            group = {s.id: by[(rate, s.id)] for s in settings if (rate, s.id) in by}
            best, value = best_fixed(group, key, higher=not p99)
            mine = metric(group.get("auto"), key)
            row.append(best.setting.label if best else "—")
            row.append(f"{mine / value:.2f}x" if best and C.is_number(mine) and value else "—")
        rows.append(row)
    return C.markdown_table(headers, rows, ["r"] * len(headers))


def why_cell(case: Case) -> str:
    m = case.result.get("metrics", {})
    parts = []
    for key, short in (
        ("st_full_batches", "full"),
        ("st_deadline_batches", "deadline"),
        ("st_idle_batches", "idle"),
        ("st_adaptive_batches", "adaptive"),
    ):
        value = m.get(key)
        if C.is_number(value) and value > 0:
            parts.append(f"{short} {value:,.0f}")
    return ", ".join(parts) if parts else "—"


def render_details(cases: list[Case], curve: Curve) -> str:
    headers = [
        "rate /s",
        "setting",
        "offered /s",
        "items/s",
        "p50 ms",
        "p99 ms",
        "gen lag p99 ms",
        "mean batch",
        "batches of 1",
        "model busy",
        "why batches left (window)",
    ]
    rows = []
    for case in sorted(
        (c for c in cases if c.curve.id == curve.id),
        key=lambda c: (c.rate, SETTING_IDS.index(c.setting.id)),
    ):
        if "error" in case.result:
            rows.append([f"{case.rate:,}", case.setting.label, "ERROR", *([""] * 8)])
            continue
        busy, singles = metric(case, "model_busy"), metric(case, "single_batches")
        rows.append(
            [
                f"{case.rate:,}",
                case.setting.label,
                C.fmt_num(metric(case, "offered_per_s"), 0),
                cell(case, "items_per_s", 0),
                C.fmt_num(metric(case, "p50_ms"), 2),
                cell(case, "p99_ms", 2),
                C.fmt_num(metric(case, "gen_lag_p99_ms"), 2),
                C.fmt_num(metric(case, "mean_batch"), 1),
                f"{singles:.0%}" if C.is_number(singles) else "—",
                f"{busy:.0%}" if C.is_number(busy) else "—",
                why_cell(case),
            ]
        )
    return C.markdown_table(headers, rows, ["r", "l", *("r" for _ in headers[2:-1]), "l"])


def render_report(
    cases: list[Case],
    settings: list[Setting],
    machine: dict[str, Any],
    run_desc: str,
    profile: dict[str, Any],
    chart: Path | None,
) -> str:
    out = [
        f'## batched `timeout_ms="auto"` under Poisson traffic ({run_desc})',
        "",
        f"{C.machine_line(machine)}; every case in a fresh interpreter."
        + (f" Chart: [{chart.name}]({chart.name})." if chart else ""),
        "",
        f"`batch_size={BATCH_SIZE}`; open-loop Poisson arrivals (the same seeded times for every "
        f"setting at a rate), handed to a pool of {profile['pool']} caller threads that each "
        "call `f(item)`. Latency: scheduled arrival to result. Throughput: items completed per "
        "second from the window's start to the last completion. Per case: "
        f"{profile['warmup_s']:g} s warm-up, then a measured window of "
        f"max({profile['measure_s']:g} s, {profile['min_items']} arrivals), then up to "
        f"{profile['drain_s']:g} s for the outstanding calls. `sat`: saturated (items of the "
        f"window still unfinished at the cut-off, or under {SATURATED_BELOW:.0%} of the offered "
        "rate served); "
        "`≥`: p99 counts unfinished items at their latency so far, a lower bound. "
        f'"auto" is `timeout_ms="auto", max_timeout_ms={AUTO_MAX_TIMEOUT_MS:g}`.',
        "",
        f"A run is disturbed when the load generator fell over {LAG_LIMIT_MS:g} ms behind its "
        "schedule (p99) at a rate the model can serve: the machine stalled the process. "
        f"Disturbed runs are tried again (up to {profile['retries']} more tries); each figure "
        f"is the median of a case's undisturbed runs ({profile['repeat']} wanted), or of all "
        "its runs, marked `†`, when every try was disturbed.",
        "",
        '"best fixed": the fixed `timeout_ms` with the best figure at that rate; "auto / best": '
        '"auto"\'s figure divided by it.',
    ]
    for curve in CURVES.values():
        mine = [c for c in cases if c.curve.id == curve.id]
        if not mine:
            continue
        eff = effective_cost(mine)
        eff_text = (
            f"effective a = {eff['a_s'] * 1e3:.3f} ms, b = {eff['b_s'] * 1e3:.4f} ms/item"
            if "a_s" in eff
            else "effective cost: too few batches to fit"
        )
        out += [
            "",
            f"### {curve.label}: a = {curve.a_s * 1e3:g} ms, b = {curve.b_s * 1e3:g} ms/item",
            "",
            f"Nominal: a full batch takes {curve.cost(BATCH_SIZE) * 1e3:.2f} ms, so at most "
            f"{curve.capacity():,.0f} items/s. Measured ({eff['batches']:,.0f} batches, "
            f"median time per batch size, then least squares): {eff_text}; median overshoot per "
            f"batch {C.fmt_num(eff['overshoot_p50_us'], 1)} µs over the nominal cost.",
            "",
            "p99 latency, ms:",
            "",
            render_summary(mine, curve, settings, "p99_ms"),
            "",
            "Throughput, items/s:",
            "",
            render_summary(mine, curve, settings, "items_per_s"),
            "",
            "<details><summary>All figures</summary>",
            "",
            render_details(mine, curve),
            "",
            "</details>",
        ]
    out += C.errors_markdown([(c.id, c.result) for c in cases if "error" in c.result])
    return "\n".join(out) + "\n"


def draw_chart(
    cases: list[Case], settings: list[Setting], path: Path, run_desc: str
) -> Path | None:
    """p99 latency (top) and the share of the offered rate served (bottom) against the arrival
    rate, one column per cost curve, one line per setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        C.log("[chart] matplotlib is not installed: no chart")
        return None
    curves = [c for c in CURVES.values() if any(k.curve.id == c.id for k in cases)]
    if not curves:
        return None
    fig, axes = plt.subplots(
        2,
        len(curves),
        figsize=(6.4 * len(curves), 8.0),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )
    styles = {
        "t0": ("#1f77b4", "o", "-"),
        "t1": ("#17becf", "v", "-"),
        "t5": ("#2ca02c", "s", "-"),
        "t20": ("#bcbd22", "D", "-"),
        "auto": ("#d62728", "*", "-"),
        "ref5": ("#7f7f7f", "x", "--"),
        "ref1": ("#9467bd", "+", "--"),
    }
    plain = FuncFormatter(lambda value, _pos: f"{value:,.6g}")

    def some(value: float, _pos: int) -> str:
        """Minor ticks of a log axis: label only the 2s and 5s of each decade."""
        if value <= 0:
            return ""
        lead = round(value / 10 ** math.floor(math.log10(value)))
        return f"{value:,.6g}" if lead in (2, 5) else ""

    for col, curve in enumerate(curves):
        top, bottom = axes[0][col], axes[1][col]
        for s in settings:
            pts = [
                (
                    c.rate,
                    metric(c, "p99_ms"),
                    metric(c, "items_per_s") / metric(c, "offered_per_s"),
                    is_saturated(c),
                )
                for c in sorted(
                    (c for c in cases if c.curve.id == curve.id and c.setting.id == s.id),
                    key=lambda c: c.rate,
                )
                if C.is_number(metric(c, "p99_ms")) and metric(c, "offered_per_s")
            ]
            if not pts:
                continue
            color, marker, line = styles.get(s.id, ("black", ".", "-"))
            auto = s.id == "auto"
            for ax, idx in ((top, 1), (bottom, 2)):
                ax.plot(
                    [p[0] for p in pts],
                    [p[idx] for p in pts],
                    line,
                    color=color,
                    lw=2.4 if auto else 1.2,
                    label=s.label,
                    zorder=3 if auto else 2,
                )
                for p in pts:
                    ax.plot(
                        [p[0]],
                        [p[idx]],
                        marker,
                        color=color,
                        ms=11 if auto else 6,
                        mfc="none" if p[3] else color,
                        zorder=3 if auto else 2,
                    )
        cap = curve.capacity()
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.axvline(cap, color="black", ls="--", lw=0.8, alpha=0.5)
            ax.grid(True, which="both", alpha=0.25)
            ax.xaxis.set_major_formatter(plain)
        top.set_yscale("log")
        top.yaxis.set_major_formatter(plain)
        top.yaxis.set_minor_formatter(FuncFormatter(some))
        top.set_title(
            f"{curve.label}: {curve.a_s * 1e3:g} ms + {curve.b_s * 1e3:g} ms/item\n"
            f"(dashed: capacity with full batches, {cap:,.0f} items/s)",
            fontsize=10,
        )
        top.set_ylabel("p99 latency, ms (arrival to result)")
        bottom.set_ylabel("items/s served / offered")
        bottom.set_ylim(0, 1.1)
        bottom.set_xlabel("arrival rate, items/s (Poisson, open loop)")
        top.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"batched: timeout_ms='auto' vs fixed timeout_ms and {C.REF_VERSION}, "
        f"batch_size={BATCH_SIZE} ({run_desc}; hollow marker: saturated)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def replot_main(args: argparse.Namespace) -> int:
    """Renders the report and the chart again from a results JSON, without running anything."""
    data = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    by_id = {s.id: s for s in make_settings()}
    cases = []
    for item in data["cases"]:
        case = Case(CURVES[item["curve"]], item["rate"], by_id[item["setting"]], item["params"], 0)
        case.result = item["result"]
        case.runs = item["result"].get("runs") or [item["result"]]
        cases.append(case)
    ids = {c.setting.id for c in cases}
    settings = [s for s in make_settings() if s.id in ids]
    run_desc = data.get("run_desc") or f"{data['profile']} run, {data.get('wall_s', 0):.0f} s"
    publish(args, cases, settings, data["machine"], run_desc, data["profile_settings"], None)
    return 0


def publish(
    args: argparse.Namespace,
    cases: list[Case],
    settings: list[Setting],
    machine: dict[str, Any],
    run_desc: str,
    profile: dict[str, Any],
    data: dict[str, Any] | None,
) -> None:
    """Draws the chart (unless --no-chart), then writes the report and ``data`` (if any)."""
    png = None if args.no_chart else draw_chart(cases, settings, C.results_path(args.png), run_desc)
    report = render_report(cases, settings, machine, run_desc, profile, png)
    C.write_results(args, report, data, *([f"Chart: {png}"] if png else []))


def parent_main(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else "quick"
    profile = dict(PROFILES[profile_name])
    profile["pool"] = args.pool
    if args.repeat is not None:
        profile["repeat"] = args.repeat
    if args.retries is not None:
        profile["retries"] = args.retries
    if args.drain is not None:
        profile["drain_s"] = args.drain
    if args.measure is not None:
        profile["measure_s"] = args.measure
    wanted = args.only or profile["settings"]
    settings = [s for s in make_settings() if s.id in wanted]
    curves = [CURVES[c] for c in (args.curve or list(CURVES))]
    rates = sorted(args.rate or profile["rates"])
    if not settings:
        C.log(f"no setting matches --only {args.only}")
        return 2
    cases = build_cases(profile, curves, rates, settings)

    expect = C.expected_locations([s.impl for s in settings])
    started = time.perf_counter()
    infos: dict[str, Any] = {}
    groups: dict[tuple[int, str], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.rate, case.curve.id), []).append(case)
    done = 0
    repeat, retries = profile["repeat"], profile["retries"]
    for g, ((rate, curve_id), group) in enumerate(groups.items()):
        # Passes over the group's settings, in an order that rotates from pass to pass, until
        # each has `repeat` undisturbed runs or has used up its `repeat + retries` tries.
        attempt = 0
        while todo := [
            c
            for c in group
            if sum(map(is_clean, c.runs)) < repeat and len(c.runs) < repeat + retries
        ]:
            shift = (attempt + g) % len(todo)
            for case in todo[shift:] + todo[:shift]:
                tries = len(case.runs)
                impl = case.setting.impl
                # Every try of every setting of a group sees the same arrival times.
                params = case.params
                watchdog = case.expected_s * 3 + 60
                payload = {"params": params, "expect_dir": expect[impl], "watchdog_s": watchdog}
                t = time.perf_counter()
                result = C.run_worker(SCRIPT, impl, payload, timeout_s=watchdog + 60)
                case.runs.append(result)
                done += 1
                tag = f"[{done}] {curve_id} {rate:,}/s {case.setting.label} #{tries + 1}"
                if "error" in result:
                    C.log(f"{tag}: ERROR {result['error']}\n{result.get('stderr', '')}")
                    continue
                infos.setdefault(impl, result.get("info"))
                m = result["metrics"]
                C.log(
                    f"{tag}: {C.fmt_num(m['items_per_s'], 0)} items/s "
                    f"(offered {C.fmt_num(m['offered_per_s'], 0)}), "
                    f"p50 {C.fmt_num(m['p50_ms'], 2)} ms, p99 {C.fmt_num(m['p99_ms'], 2)} ms, "
                    f"lag p99 {C.fmt_num(m['gen_lag_p99_ms'], 2)} ms, "
                    f"batch {C.fmt_num(m['mean_batch'], 1)}"
                    f"{', SATURATED' if m['saturated'] else ''}"
                    f"{'' if is_clean(result) else ', DISTURBED'}"
                    f"  ({time.perf_counter() - t:.1f} s)"
                )
            attempt += 1
    for case in cases:
        aggregate(case)

    machine = C.machine_info()
    elapsed = time.perf_counter() - started
    tries = sum(len(c.runs) for c in cases)
    run_desc = (
        f"{profile_name} run"
        + (f", median of {repeat} undisturbed runs" if repeat > 1 else "")
        + f", {tries} runs for {len(cases)} cases, {elapsed:.0f} s"
    )
    publish(
        args,
        cases,
        settings,
        machine,
        run_desc,
        profile,
        {
            "benchmark": "adaptive",
            "profile": profile_name,
            "profile_settings": profile,
            "repeat": repeat,
            "retries": retries,
            "lag_limit_ms": LAG_LIMIT_MS,
            "wall_s": elapsed,
            "run_desc": run_desc,
            "setup": {
                "batch_size": BATCH_SIZE,
                "auto_max_timeout_ms": AUTO_MAX_TIMEOUT_MS,
                "seed": SEED,
                "curves": {
                    c.id: {
                        "a_s": c.a_s,
                        "b_s": c.b_s,
                        "capacity_per_s": c.capacity(),
                        "effective": effective_cost([k for k in cases if k.curve.id == c.id]),
                    }
                    for c in curves
                },
            },
            "machine": machine,
            "implementations": {
                i: {"python": str(C.worker_python(i)), **(infos.get(i) or {})} for i in expect
            },
            "cases": [
                {
                    "id": c.id,
                    "curve": c.curve.id,
                    "rate": c.rate,
                    "setting": c.setting.id,
                    "label": c.setting.label,
                    "impl": c.setting.impl,
                    "options": c.setting.options,
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
        sys.stderr.flush()
        # Callers of a saturated case may still be blocked in f(); nothing is left to wait for.
        os._exit(status)

    parser = C.make_parser(__doc__, "short windows", "all rates, longer windows, 0.1.5 at 1 ms too")
    parser.add_argument("--curve", action="append", choices=list(CURVES), help="repeatable")
    parser.add_argument(
        "--rate", action="append", type=C.whole_number(1), help="items/s; repeatable"
    )
    parser.add_argument(
        "--only", action="append", choices=SETTING_IDS, help="run only these settings"
    )
    parser.add_argument(
        "--repeat",
        type=C.whole_number(1),
        metavar="N",
        help="undisturbed runs wanted per case, medians reported (default: quick 1, full 3)",
    )
    parser.add_argument(
        "--retries",
        type=C.whole_number(0),
        metavar="N",
        help=f"extra tries per case for runs disturbed by the machine (load generator over "
        f"{LAG_LIMIT_MS:g} ms late at p99; default: quick 1, full 3)",
    )
    parser.add_argument(
        "--pool", type=C.whole_number(1), default=POOL, help=f"caller threads (default {POOL})"
    )
    parser.add_argument("--measure", type=float, help="measured window, seconds")
    parser.add_argument("--drain", type=float, help="seconds allowed after the last arrival")
    C.add_report_arguments(parser, "adaptive")
    parser.add_argument(
        "--png", default="adaptive.png", help="chart file (a bare name goes to benches/results/)"
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="run nothing: render the report and chart again from a results JSON",
    )
    args = parser.parse_args(argv)
    return replot_main(args) if args.from_json else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
