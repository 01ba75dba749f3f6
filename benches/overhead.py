"""Overhead of the batching machinery itself: this package against ``batched==0.1.5``.

Both implementations are imported as ``batched``, so every case runs in a child interpreter
(``overhead.py --worker <impl> <case-json>``), this one for ``ours`` or the reference venv's
for ``ref``; the two alternate case by case so that load from elsewhere hits both alike.

The batch function is trivial (``[x * 2 for x in items]``), so what is measured is the cost of
queueing, waking, batching and delivering. Cases cover the thread API (``batched.dynamically``:
N caller threads, one big list, an idle processor, a lone caller) and the asyncio API
(``batched.aio.dynamically`` on an ``async def`` and on a plain ``def``: N tasks, one big
list, an idle processor against a bare event loop's baseline). The 64-thread case also
measures the machine's floor for it: 64 bare threads passing a token round a ring
(``token_ring``). The asyncio task cases also run two peers in this interpreter: the floor
(``_floor.py``, a minimal single-loop batcher) and Ray Serve's ``@serve.batch``
(``_ray_batch.py``, outside a deployment).

    python benches/overhead.py              # short run (~4 minutes)
    python benches/overhead.py --full       # longer windows, steadier numbers
    python benches/overhead.py --only lone --only idle --impl ours
    python benches/overhead.py --only aio_async_tasks1000 --impl ours --peers floor

Results: a markdown report on stdout and in benches/results/overhead.md, JSON in
benches/results/overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

SCRIPT = Path(__file__).resolve()

# --------------------------------------------------------------------------------------------
# Scenarios (run inside a worker child; ``batched`` is whichever implementation it imported)
# --------------------------------------------------------------------------------------------

ScenarioFn = Callable[[ModuleType, dict[str, Any]], dict[str, Any]]
SCENARIOS: dict[str, ScenarioFn] = {}


def scenario(name: str) -> Callable[[ScenarioFn], ScenarioFn]:
    """Registers a scenario. It gets the imported ``batched`` module and the case's params and
    returns a dict of metrics (plain numbers) plus anything else worth keeping in the JSON.
    Async flavours do the same with ``asyncio.run`` inside the function."""

    def register(fn: ScenarioFn) -> ScenarioFn:
        SCENARIOS[name] = fn
        return fn

    return register


def make_double(batched: ModuleType, batch_size: int, timeout_ms: float) -> tuple[Any, list[int]]:
    """The decorated trivial function, and a [batches, items] counter updated by the worker."""
    counts = [0, 0]

    @batched.dynamically(batch_size=batch_size, timeout_ms=timeout_ms)  # type: ignore[untyped-decorator]
    def double(items: list[int]) -> list[int]:
        counts[0] += 1
        counts[1] += len(items)
        return [x * 2 for x in items]

    return double, counts


def check_one(f: Any, item: int) -> None:
    got = f(item)
    if got != 2 * item:
        raise C.BenchError(f"f({item!r}) returned {got!r}, expected {2 * item!r}")


@dataclass(frozen=True)
class Mark:
    """One edge of a measured window: the clocks and the batch function's counters."""

    wall: float
    cpu: float
    batches: int
    items: int

    @staticmethod
    def now(counts: list[int]) -> Mark:
        return Mark(time.perf_counter(), time.process_time(), counts[0], counts[1])


def window_metrics(
    window: list[float], start: Mark, end: Mark, stats: dict[str, Any]
) -> dict[str, Any]:
    """Throughput, latency and CPU of the calls that completed between ``start`` and ``end``
    (``window``: their latencies)."""
    items = len(window)
    wall = end.wall - start.wall
    cpu = end.cpu - start.cpu
    batches = end.batches - start.batches
    lat = C.latency_summary(window)
    return {
        "items_per_s": items / wall,
        "p50_us": lat["p50_us"],
        "p99_us": lat["p99_us"],
        "cpu_us_per_item": cpu / items * 1e6 if items else math.nan,
        "mean_batch": (end.items - start.items) / batches if batches > 0 else math.nan,
        "items": items,
        "window_s": wall,
        "cpu_s": cpu,
        "latency": lat,
        "impl_stats": stats,
    }


@scenario("threads")
def threads_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """``threads`` callers, each calling ``f(item)`` in a loop for the whole run.

    Calls count when they complete inside the measured window (after the warm-up); CPU time
    is the whole process's (callers, worker and all) over that window.
    """
    n_threads, timeout_ms = p["threads"], p["timeout_ms"]
    f, counts = make_double(batched, p["batch_size"], timeout_ms)
    check_one(f, -1)  # the worker exists before anything is timed

    callers = C.CallerThreads(n_threads)
    running, start, errors = callers.running, callers.start, callers.errors

    def caller(k: int) -> None:
        my_ends, my_lats = callers.ends[k], callers.lats[k]
        clock = time.perf_counter
        item = k * 1_000_000_000
        start.wait()
        try:
            while running[0]:
                t = clock()
                got = f(item)
                e = clock()
                if got != 2 * item:
                    errors.append(f"thread {k}: f({item}) returned {got!r}")
                    return
                my_ends.append(e)
                my_lats.append(e - t)
                item += 1
        except BaseException as exc:  # report it, do not hang the others' join
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")

    window_start, window_end, stuck = callers.run(caller, p, lambda: Mark.now(counts))
    if errors:
        raise C.BenchError("; ".join(errors[:5]))
    if stuck:
        raise C.BenchError(
            f"{stuck} of {n_threads} caller threads still blocked in f(item) "
            f"{p['join_s']} s after the run ended"
        )
    stats = C.impl_stats(f)
    C.shut(f)
    window = callers.window(window_start.wall, window_end.wall)
    metrics = window_metrics(window, window_start, window_end, stats)
    if p.get("ring_s"):
        metrics.update(token_ring(n_threads, p["warmup_s"], p["ring_s"], p["join_s"]))
    return metrics


def token_ring(n_threads: int, warmup_s: float, duration_s: float, join_s: float) -> dict[str, Any]:
    """The machine's floor under the threads scenario: `n_threads` bare Python threads pass a
    token round a ring, each blocked on its own lock until its predecessor releases it.

    Every hand-off wakes one blocked thread, which takes the GIL and wakes the next, as each
    item of a batcher with blocked callers must be handed back to its thread; there is no
    batching and no work. Hand-offs per second bound the items per second of any such batcher.
    """
    locks = [threading.Lock() for _ in range(n_threads)]
    for lock in locks:
        lock.acquire()
    passes = [0] * n_threads
    running = [True]

    def member(k: int) -> None:
        mine, nexts = locks[k], locks[(k + 1) % n_threads]
        while True:
            mine.acquire()
            if not running[0]:
                nexts.release()
                return
            passes[k] += 1
            nexts.release()

    members = [threading.Thread(target=member, args=(k,), daemon=True) for k in range(n_threads)]
    for thread in members:
        thread.start()
    locks[0].release()
    time.sleep(warmup_s)
    count0, wall0, cpu0 = sum(passes), time.perf_counter(), time.process_time()
    time.sleep(duration_s)
    count1, wall1, cpu1 = sum(passes), time.perf_counter(), time.process_time()
    running[0] = False
    deadline = time.monotonic() + join_s
    for thread in members:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in members):
        raise C.BenchError("the token ring did not stop")
    handoffs = count1 - count0
    return {
        "ring_handoffs_per_s": handoffs / (wall1 - wall0),
        "ring_cpu_us": (cpu1 - cpu0) / handoffs * 1e6 if handoffs else math.nan,
    }


@scenario("big_list")
def big_list_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """One call with a list of ``n`` items; repeated while the time budget allows."""
    f, _counts = make_double(batched, p["batch_size"], p["timeout_ms"])
    check_one(f, -1)
    calls = BigCalls(p, "f")
    while calls.more():
        calls.start()
        calls.stop(f(calls.items))
    C.shut(f)
    return calls.metrics()


class BigCalls:
    """Times repeated calls with one list of ``n`` items, ``reps`` of them or as many as
    ``budget_s`` allows (at least one), and checks every result."""

    def __init__(self, p: dict[str, Any], call: str) -> None:
        self.n, self.reps, self.call = p["n"], p["reps"], call
        self.items = list(range(self.n))
        self.expected = [2 * x for x in self.items]
        self.times: list[float] = []
        self.cpus: list[float] = []
        self.budget_end = time.perf_counter() + p["budget_s"]

    def more(self) -> bool:
        over = bool(self.times) and time.perf_counter() > self.budget_end
        return len(self.times) < self.reps and not over

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def stop(self, got: Any) -> None:
        self.times.append(time.perf_counter() - self.wall0)
        self.cpus.append(time.process_time() - self.cpu0)
        if got != self.expected:
            pairs = enumerate(zip(got, self.expected, strict=False))
            bad = next((i for i, (a, b) in pairs if a != b), None)
            raise C.BenchError(
                f"{self.call}(list of {self.n}) returned {type(got).__name__} of length "
                f"{len(got)}; first mismatch at index {bad}"
            )

    def metrics(self) -> dict[str, Any]:
        best = min(self.times)
        return {
            "items_per_s": self.n / best,
            "items_per_s_median": self.n / C.percentile(self.times, 50),
            "best_s": best,
            "cpu_us_per_item": min(self.cpus) / self.n * 1e6,
            "times_s": self.times,
        }


@scenario("idle")
def idle_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """After one call, nobody calls: CPU used and context switches of the process's threads.

    The measuring (main) thread sleeps through the window; its own wake-up at the end is not
    the processor's doing, so it is reported apart (``measuring_thread_switches``) and left
    out of ``wakeups_per_s``. Every other thread of the process is counted.
    """
    f, _counts = make_double(batched, p["batch_size"], p["timeout_ms"])
    check_one(f, -1)
    time.sleep(p["settle_s"])
    window = QuietWindow()
    time.sleep(p["duration_s"])
    window.close()
    check_one(f, -2)  # still works after the quiet spell
    C.shut(f)
    vol = sum(v for v, _ in window.others)
    nonvol = sum(n for _, n in window.others)
    return {
        "cpu_ms_per_s": window.cpu_ms_per_s,
        "wakeups_per_s": (vol + nonvol) / window.wall,
        "voluntary": vol,
        "nonvoluntary": nonvol,
        "measuring_thread_switches": sum(window.mine),
        **window.figures(),
    }


class QuietWindow:
    """CPU time and context switches of every thread of this process from its creation to
    ``close``, the measuring thread's (``mine``) apart from the others'."""

    def __init__(self) -> None:
        self.me = threading.get_native_id()
        self.before = C.thread_ctx_switches()
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def close(self) -> None:
        cpu1, wall1 = time.process_time(), time.perf_counter()
        self.after = C.thread_ctx_switches()
        self.wall = wall1 - self.wall0
        self.cpu_ms_per_s = (cpu1 - self.cpu0) / self.wall * 1e3
        before, after = self.before, self.after
        self.per_thread = {
            tid: (after[tid][0] - before[tid][0], after[tid][1] - before[tid][1])
            for tid in sorted(before.keys() & after.keys())
        }
        self.mine = self.per_thread.get(self.me, (0, 0))
        self.others = [d for tid, d in self.per_thread.items() if tid != self.me]

    def figures(self) -> dict[str, Any]:
        started_or_ended = self.before.keys() ^ self.after.keys()
        return {
            "threads_seen": len(self.after),
            "threads_started_or_ended": sorted(set(str(t) for t in started_or_ended)),
            "per_thread": {str(tid): list(d) for tid, d in self.per_thread.items()},
            "window_s": self.wall,
        }


@scenario("lone")
def lone_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """One thread calling ``f(item)`` back to back: each call waits out ``timeout_ms``."""
    timeout_ms = p["timeout_ms"]
    f, counts = make_double(batched, p["batch_size"], timeout_ms)
    for i in range(p["warmup_calls"]):
        check_one(f, -1 - i)
    b0, i0 = counts[0], counts[1]
    lats: list[float] = []
    clock = time.perf_counter
    end = clock() + p["duration_s"]
    item = 0
    while clock() < end:
        t = clock()
        got = f(item)
        lats.append(clock() - t)
        if got != 2 * item:
            raise C.BenchError(f"f({item}) returned {got!r}")
        item += 1
    b1, i1 = counts[0], counts[1]
    C.shut(f)
    lat = C.latency_summary(lats)
    # What this machine's timers allow: a bare time.sleep(timeout) overshoots by this much.
    overshoot = []
    for _ in range(p["baseline_sleeps"]):
        t = clock()
        time.sleep(timeout_ms / 1e3)
        overshoot.append(clock() - t - timeout_ms / 1e3)
    return {
        "sleep_overshoot_p50_us": C.percentile(overshoot, 50) * 1e6,
        "p50_us": lat["p50_us"],
        "p99_us": lat["p99_us"],
        "excess_p50_us": lat["p50_us"] - timeout_ms * 1e3,
        "mean_batch": (i1 - i0) / (b1 - b0) if b1 > b0 else math.nan,
        "latency": lat,
    }


# --------------------------------------------------------------------------------------------
# asyncio scenarios: ``batched.aio.dynamically`` on an ``async def`` or a plain ``def``
# --------------------------------------------------------------------------------------------


def make_aio_double(
    batched: ModuleType, variant: str, batch_size: int, timeout_ms: float, peer: str | None = None
) -> tuple[Any, list[int]]:
    """``aio.dynamically`` on the trivial function, as ``async def`` (``variant="async"``) or as
    a plain ``def`` (``variant="def"``), and its [batches, items] counter. A ``peer`` batches
    it instead: ``"floor"`` (``_floor.MinimalBatcher``) or ``"ray"`` (``@serve.batch``)."""
    counts = [0, 0]
    decorate = batched.aio.dynamically(batch_size=batch_size, timeout_ms=timeout_ms)
    if peer == "floor":
        from _floor import MinimalBatcher

        def decorate(func: Any) -> Any:
            return MinimalBatcher(func, batch_size, timeout_ms)
    elif peer == "ray":
        from _ray_batch import ray_batch

        def decorate(func: Any) -> Any:
            return ray_batch(func, batch_size=batch_size, timeout_ms=timeout_ms)

    if variant == "async":

        async def double_async(items: list[int]) -> list[int]:
            counts[0] += 1
            counts[1] += len(items)
            return [x * 2 for x in items]

        return decorate(double_async), counts
    if variant == "def":

        def double(items: list[int]) -> list[int]:
            counts[0] += 1
            counts[1] += len(items)
            return [x * 2 for x in items]

        return decorate(double), counts
    raise ValueError(f"unknown variant {variant!r}")


async def acheck_one(f: Any, item: int) -> None:
    got = await f(item)
    if got != 2 * item:
        raise C.BenchError(f"await f({item!r}) returned {got!r}, expected {2 * item!r}")


@scenario("aio_tasks")
def aio_tasks_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """``tasks`` asyncio tasks on one loop, each awaiting ``f(item)`` in a loop for the run.

    Counted as in ``threads``: calls that complete inside the measured window; CPU time is the
    whole process's (the loop and any worker threads)."""
    return asyncio.run(_aio_tasks(batched, p))


async def _aio_tasks(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    n_tasks = p["tasks"]
    f, counts = make_aio_double(
        batched, p["variant"], p["batch_size"], p["timeout_ms"], p.get("peer")
    )
    await acheck_one(f, -1)  # the processor exists before anything is timed

    running = [True]
    ends: list[array[float]] = [array("d") for _ in range(n_tasks)]
    lats: list[array[float]] = [array("d") for _ in range(n_tasks)]
    errors: list[str] = []

    async def caller(k: int) -> None:
        my_ends, my_lats = ends[k], lats[k]
        clock = time.perf_counter
        item = k * 1_000_000_000
        try:
            while running[0]:
                t = clock()
                got = await f(item)
                e = clock()
                if got != 2 * item:
                    errors.append(f"task {k}: await f({item}) returned {got!r}")
                    return
                my_ends.append(e)
                my_lats.append(e - t)
                item += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            errors.append(f"task {k}: {type(exc).__name__}: {exc}")

    tasks = [asyncio.create_task(caller(k)) for k in range(n_tasks)]
    await asyncio.sleep(p["warmup_s"])
    window_start = Mark.now(counts)
    await asyncio.sleep(p["duration_s"])
    window_end = Mark.now(counts)
    running[0] = False
    _done, pending = await asyncio.wait(tasks, timeout=p["join_s"])
    for task in pending:
        task.cancel()
    if errors:
        raise C.BenchError("; ".join(errors[:5]))
    if pending:
        raise C.BenchError(
            f"{len(pending)} of {n_tasks} tasks still awaiting f(item) "
            f"{p['join_s']} s after the run ended"
        )
    stats = C.impl_stats(f)
    C.shut(f)
    window = C.completed_between(ends, lats, window_start.wall, window_end.wall)
    return window_metrics(window, window_start, window_end, stats)


@scenario("aio_big_list")
def aio_big_list_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """One ``await f(list of n items)``; repeated while the time budget allows."""
    return asyncio.run(_aio_big_list(batched, p))


async def _aio_big_list(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    f, _counts = make_aio_double(batched, p["variant"], p["batch_size"], p["timeout_ms"])
    await acheck_one(f, -1)
    calls = BigCalls(p, "await f")
    while calls.more():
        calls.start()
        calls.stop(await f(calls.items))
    C.shut(f)
    return calls.metrics()


@scenario("aio_idle")
def aio_idle_scenario(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    """A running loop whose only task sleeps: CPU used and context switches of every thread.

    With ``variant`` set, one call is made first, so that the processor exists and has gone
    idle; with ``variant`` None nothing of ``batched`` is used (the baseline). The measuring
    task runs on the loop thread, so the loop thread's switches (``loop_switches``: it sleeps
    in epoll and wakes at least once, for the measuring sleep's own end) are kept apart from
    every other thread's (``other_switches``). The parent subtracts the baseline child's total
    from a processor child's total: what remains is the processor's doing.
    """
    return asyncio.run(_aio_idle(batched, p))


async def _aio_idle(batched: ModuleType, p: dict[str, Any]) -> dict[str, Any]:
    f = None
    if p["variant"] is not None:
        f, _counts = make_aio_double(batched, p["variant"], p["batch_size"], p["timeout_ms"])
        await acheck_one(f, -1)
    await asyncio.sleep(p["settle_s"])
    window = QuietWindow()
    await asyncio.sleep(p["duration_s"])
    window.close()
    if f is not None:
        await acheck_one(f, -2)  # still works after the quiet spell
        C.shut(f)
    loop_switches = sum(window.mine)
    other_switches = sum(v + n for v, n in window.others)
    return {
        "cpu_ms_per_s": window.cpu_ms_per_s,
        "switches": loop_switches + other_switches,
        "wakeups_per_s": (loop_switches + other_switches) / window.wall,
        "loop_switches": loop_switches,
        "other_switches": other_switches,
        "voluntary": sum(v for v, _ in window.per_thread.values()),
        "nonvoluntary": sum(n for _, n in window.per_thread.values()),
        **window.figures(),
    }


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    import batched

    return SCENARIOS[payload["scenario"]](batched, payload["params"])


# --------------------------------------------------------------------------------------------
# The plan (parent side)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool = False
    ratio: bool = True  # False for signed quantities, where "times better" means nothing
    digits: int | None = None


@dataclass
class Case:
    id: str
    scenario: str
    label: str
    params: dict[str, Any]
    metrics: list[Metric]
    expected_s: float  # rough run time, for the watchdog
    needs: tuple[str, ...] = ()  # ids of cases whose results this one's derived metrics use
    # Other batchers run on the same case in ours' interpreter (see ``PEERS``).
    peers: tuple[str, ...] = ()
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


# Batchers measured beside ours and the reference on the asyncio task cases, in this
# interpreter: the floor (``_floor.MinimalBatcher``) and Ray Serve's ``@serve.batch`` (outside
# a deployment; ``_ray_batch`` stubs the replica-context check that only logs a warning).
PEERS = {"floor": "floor", "ray": "Ray Serve"}

THREAD_METRICS = [
    Metric("items_per_s", "items/s", higher_is_better=True),
    Metric("p50_us", "p50 latency µs"),
    Metric("p99_us", "p99 latency µs"),
    Metric("cpu_us_per_item", "CPU µs/item"),
    Metric("mean_batch", "mean batch size", higher_is_better=True, ratio=False, digits=1),
]

RING_METRICS = [
    Metric(
        "ring_handoffs_per_s",
        "baseline: bare ring of as many threads, hand-offs/s",
        higher_is_better=True,
        ratio=False,
        digits=0,
    ),
    Metric("ring_cpu_us", "baseline: CPU µs per ring hand-off", ratio=False, digits=1),
]

PROFILES = {
    "quick": {
        "warmup_s": 0.5,
        "duration_s": 2.0,
        "idle_s": 2.0,
        "lone_s": 2.0,
        "big_reps": 3,
        "big_budget_s": 6.0,
    },
    "full": {
        "warmup_s": 1.0,
        "duration_s": 6.0,
        "idle_s": 5.0,
        "lone_s": 6.0,
        "big_reps": 7,
        "big_budget_s": 30.0,
    },
}


def build_cases(profile: dict[str, Any]) -> list[Case]:
    cases = []
    for timeout_ms in (5.0, 1.0):
        for n in (1, 4, 16, 64):
            # The 64-thread case also measures the machine's hand-off floor.
            ring = n == 64 and timeout_ms == 5.0
            cases.append(
                Case(
                    id=f"threads{n}_t{timeout_ms:g}",
                    scenario="threads",
                    label=f"{n} thread{'s' if n > 1 else ''}, timeout {timeout_ms:g} ms",
                    params={
                        **window_params(profile, timeout_ms),
                        "threads": n,
                        "ring_s": profile["duration_s"] if ring else 0.0,
                    },
                    metrics=THREAD_METRICS + (RING_METRICS if ring else []),
                    expected_s=(profile["warmup_s"] + profile["duration_s"]) * (2 if ring else 1),
                )
            )
    cases.append(big_list_case("big_list_100k", "big_list", "one call, 100 000-item list", profile))
    cases.append(
        Case(
            id="idle",
            scenario="idle",
            label="idle processor (timeout 5 ms)",
            params={
                "batch_size": 32,
                "timeout_ms": 5.0,
                "settle_s": 0.3,
                "duration_s": profile["idle_s"],
            },
            metrics=[
                Metric("cpu_ms_per_s", "CPU ms/s", digits=3),
                Metric("wakeups_per_s", "wake-ups/s", digits=1),
            ],
            expected_s=profile["idle_s"] + 1,
        )
    )
    cases.append(
        Case(
            id="lone",
            scenario="lone",
            label="lone caller, timeout 5 ms",
            params={
                "batch_size": 32,
                "timeout_ms": 5.0,
                "warmup_calls": 5,
                "duration_s": profile["lone_s"],
                "baseline_sleeps": 100,
            },
            metrics=[
                Metric("p50_us", "p50 latency µs"),
                Metric("p99_us", "p99 latency µs"),
                Metric("excess_p50_us", "p50 - timeout µs", ratio=False, digits=0),
                Metric(
                    "sleep_overshoot_p50_us",
                    "baseline: sleep(5 ms) overshoot p50 µs",
                    ratio=False,
                    digits=0,
                ),
            ],
            expected_s=profile["lone_s"] + 2,
        )
    )
    cases.extend(build_aio_cases(profile))
    return cases


def window_params(profile: dict[str, Any], timeout_ms: float) -> dict[str, Any]:
    """The settings of a case that counts the calls completing in a measured window."""
    return {
        "timeout_ms": timeout_ms,
        "batch_size": 32,
        "warmup_s": profile["warmup_s"],
        "duration_s": profile["duration_s"],
        "join_s": 10.0,
    }


def big_list_case(
    case_id: str, scenario: str, label: str, profile: dict[str, Any], **params: Any
) -> Case:
    return Case(
        id=case_id,
        scenario=scenario,
        label=label,
        params={
            **params,
            "n": 100_000,
            "batch_size": 32,
            "timeout_ms": 5.0,
            "reps": profile["big_reps"],
            "budget_s": profile["big_budget_s"],
        },
        metrics=[
            Metric("items_per_s", "items/s", higher_is_better=True),
            Metric("cpu_us_per_item", "CPU µs/item", digits=3),
        ],
        expected_s=profile["big_budget_s"] + 10,
    )


VARIANT_LABELS = {"async": "async def", "def": "def"}


def build_aio_cases(profile: dict[str, Any]) -> list[Case]:
    cases = []
    for variant in ("async", "def"):
        for n in (1, 100, 1000):
            cases.append(
                Case(
                    id=f"aio_{variant}_tasks{n}",
                    scenario="aio_tasks",
                    label=f"asyncio, {VARIANT_LABELS[variant]}, "
                    f"{f'{n:,}'.replace(',', ' ')} task{'s' if n > 1 else ''}, timeout 5 ms",
                    params={**window_params(profile, 5.0), "variant": variant, "tasks": n},
                    metrics=THREAD_METRICS,
                    expected_s=profile["warmup_s"] + profile["duration_s"] + 5,
                    peers=("floor", "ray") if variant == "async" else ("floor",),
                )
            )
    cases.append(
        big_list_case(
            "aio_big_list_100k",
            "aio_big_list",
            "asyncio, async def, one await of a 100 000-item list",
            profile,
            variant="async",
        )
    )
    idle_s = profile["idle_s"]
    idle_params = {"batch_size": 32, "timeout_ms": 5.0, "settle_s": 0.3, "duration_s": idle_s}
    switch_metrics = [
        Metric("cpu_ms_per_s", "CPU ms/s", digits=3),
        Metric("loop_switches", f"switches in {idle_s:g} s: loop thread", ratio=False, digits=0),
        Metric("other_switches", f"switches in {idle_s:g} s: other threads", ratio=False, digits=0),
    ]
    cases.append(
        Case(
            id="aio_idle_baseline",
            scenario="aio_idle",
            label="asyncio idle baseline: bare asyncio.sleep, no processor",
            params={**idle_params, "variant": None},
            metrics=switch_metrics,
            expected_s=idle_s + 1,
        )
    )
    for variant in ("async", "def"):
        cases.append(
            Case(
                id=f"aio_idle_{variant}",
                scenario="aio_idle",
                label=f"asyncio idle processor, {VARIANT_LABELS[variant]} (timeout 5 ms)",
                params={**idle_params, "variant": variant},
                metrics=[
                    *switch_metrics,
                    Metric("wakeups_per_s", "wake-ups/s, all threads", digits=1),
                    Metric(
                        "processor_wakeups",
                        f"wake-ups in {idle_s:g} s by the processor (minus baseline)",
                        ratio=False,
                        digits=0,
                    ),
                    Metric(
                        "processor_wakeups_per_s",
                        "wake-ups/s by the processor (minus baseline)",
                        digits=1,
                    ),
                ],
                expected_s=idle_s + 1,
                needs=("aio_idle_baseline",),
            )
        )
    return cases


def derive_metrics(cases: dict[str, Case], impls: list[str]) -> None:
    """Metrics computed across cases once all have run: an asyncio idle processor's wake-ups
    minus those of the same interpreter's bare loop (``aio_idle_baseline``)."""
    baseline = cases.get("aio_idle_baseline")
    for case in cases.values():
        if case.scenario != "aio_idle" or case is baseline:
            continue
        for impl in impls:
            mine = metric_value(case, impl, "switches")
            base = metric_value(baseline, impl, "switches") if baseline is not None else None
            if not (C.is_number(mine) and C.is_number(base)):
                continue
            metrics = case.results[impl]["metrics"]
            metrics["baseline_switches"] = base
            metrics["processor_wakeups"] = mine - base
            metrics["processor_wakeups_per_s"] = (mine - base) / metrics["window_s"]


def metric_value(case: Case, impl: str, key: str) -> Any:
    return C.metric(case.results.get(impl), key)


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def render_table(cases: list[Case], impls: list[str]) -> str:
    headers = ["scenario", "metric", *(C.IMPL_LABELS[i] for i in impls)]
    align = ["l", "l", *("r" for _ in impls)]
    both = impls == ["ours", "ref"]
    if both:
        headers.append("ours vs ref")
        align.append("r")
    peers = [peer for peer in PEERS if any(peer in case.results for case in cases)]
    for peer in peers:
        headers += [PEERS[peer], f"ours vs {PEERS[peer]}"]
        align += ["r", "r"]
    rows = []
    for case in cases:
        for n, m in enumerate(case.metrics):
            row = [case.label if n == 0 else "", m.label]
            for impl in impls:
                result = case.results.get(impl, {})
                if "error" in result:
                    row.append("ERROR")
                else:
                    row.append(C.fmt_num(metric_value(case, impl, m.key), m.digits))
            if both:
                g = (
                    C.gain(
                        metric_value(case, "ours", m.key),
                        metric_value(case, "ref", m.key),
                        m.higher_is_better,
                    )
                    if m.ratio
                    else None
                )
                row.append(C.fmt_ratio(g) if m.ratio else "")
            for peer in peers:
                if peer not in case.results:
                    row += ["", ""]
                    continue
                theirs = metric_value(case, peer, m.key)
                row.append(
                    "ERROR" if "error" in case.results[peer] else C.fmt_num(theirs, m.digits)
                )
                g = C.gain(metric_value(case, "ours", m.key), theirs, m.higher_is_better)
                row.append(C.fmt_ratio(g) if m.ratio else "")
            rows.append(row)
    return C.markdown_table(headers, rows, align)


def render_report(
    cases: list[Case],
    impls: list[str],
    errors: list[tuple[str, dict[str, Any]]],
    machine: dict[str, Any],
    run_desc: str,
) -> str:
    out = [
        f"## batched overhead: ours vs {C.REF_VERSION} ({run_desc})",
        "",
        f"{C.machine_line(machine)}; every case in a fresh interpreter, ours and "
        f"{C.REF_VERSION} interleaved. Batch function: `[x * 2 for x in items]`, "
        "batch_size 32.",
        "",
        "Ratio columns: how many times better ours is (items/s: ours/theirs; times and CPU: "
        "theirs/ours); > 1 means ours is better.",
        "",
        render_table(cases, impls),
        *C.errors_markdown(errors),
    ]
    return "\n".join(out) + "\n"


def parent_main(args: argparse.Namespace) -> int:
    profile_name = "full" if args.full else "quick"
    profile = PROFILES[profile_name]
    impls = ["ours", "ref"] if args.impl == "both" else [args.impl]
    cases = build_cases(profile)
    if args.only:
        wanted = {c.id for c in cases if any(o in c.id or o == c.scenario for o in args.only)}
        if not wanted:
            C.log(f"no case matches --only {args.only}")
            return 2
        wanted |= {need for c in cases if c.id in wanted for need in c.needs}
        cases = [c for c in cases if c.id in wanted]

    # A peer runs in ours' interpreter.
    expect = C.expected_locations([*impls, *(["ours"] if args.peers else [])])

    started = time.perf_counter()
    infos: dict[str, Any] = {}
    for case in cases:
        runners = [*impls, *(peer for peer in case.peers if peer in args.peers)]
        runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in runners}
        for rep in range(args.repeat):
            for impl in runners:
                watchdog = case.expected_s * 3 + 60
                # A peer runs in ours' interpreter, told which batcher to use.
                peer = impl in PEERS
                payload = {
                    "scenario": case.scenario,
                    "params": {**case.params, "peer": impl} if peer else case.params,
                    "expect_dir": expect["ours" if peer else impl],
                    "watchdog_s": watchdog,
                }
                t = time.perf_counter()
                result = C.run_worker(
                    SCRIPT, "ours" if peer else impl, payload, timeout_s=watchdog + 60
                )
                runs[impl].append(result)
                tag = f"[{case.id}{f' #{rep + 1}' if args.repeat > 1 else ''}] {impl}"
                if "error" in result:
                    C.log(f"{tag}: ERROR {result['error']}")
                else:
                    infos.setdefault(impl, result.get("info"))
                    shown = ", ".join(
                        f"{m.label}={C.fmt_num(result['metrics'].get(m.key), m.digits)}"
                        for m in case.metrics
                    )
                    C.log(f"{tag}: {shown}  ({time.perf_counter() - t:.1f} s)")
        for impl in runners:
            case.results[impl] = C.combine_runs(runs[impl])

    derive_metrics({c.id: c for c in cases}, impls)
    errors = [
        (f"{c.id} ({impl})", result)
        for c in cases
        for impl, result in c.results.items()
        if "error" in result
    ]
    machine = C.machine_info()
    report = render_report(
        cases,
        impls,
        errors,
        machine,
        f"{profile_name} run"
        + (f", median of {args.repeat} runs" if args.repeat > 1 else "")
        + f", {time.perf_counter() - started:.0f} s",
    )
    C.write_results(
        args,
        report,
        {
            "benchmark": "overhead",
            "profile": profile_name,
            "profile_settings": profile,
            "repeat": args.repeat,
            "machine": machine,
            "implementations": {
                i: {"python": str(C.worker_python(i)), **(infos.get(i) or {})} for i in impls
            },
            "cases": [
                {
                    "id": c.id,
                    "scenario": c.scenario,
                    "label": c.label,
                    "params": c.params,
                    "results": c.results,
                    "gains": {
                        m.key: C.gain(
                            metric_value(c, "ours", m.key),
                            metric_value(c, "ref", m.key),
                            m.higher_is_better,
                        )
                        for m in c.metrics
                        if m.ratio
                    }
                    if len(impls) == 2
                    else {},
                }
                for c in cases
            ],
        },
    )
    return C.exit_status(args, bool(errors))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = C.worker_entry(argv, SCRIPT, measure)
    if status is not None:
        return status

    parser = C.make_parser(__doc__, "short windows", "longer windows, steadier numbers")
    parser.add_argument("--impl", choices=["both", "ours", "ref"], default="both")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        type=peer_list,
        help="comma-separated peers to run on the asyncio task cases "
        f"({', '.join(PEERS)}; empty for none)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only cases whose id contains TEXT or whose scenario is TEXT "
        "(repeatable); ids: threads<N>_t<ms>, big_list_100k, idle, lone, "
        "aio_<async|def>_tasks<N>, aio_big_list_100k, aio_idle_<baseline|async|def>",
    )
    C.add_report_arguments(
        parser, "overhead", repeat_help="run every case N times (interleaved) and report medians"
    )
    return parent_main(parser.parse_args(argv))


def peer_list(text: str) -> list[str]:
    peers = [peer for peer in text.split(",") if peer]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    return peers


if __name__ == "__main__":
    sys.exit(main())
