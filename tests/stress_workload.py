"""The stress workload of issue #6, "proof that nothing is lost".

Many threads and asyncio tasks call several processors at once, for a fixed time, with single
items and lists, priorities, poison items that make the batch function raise, per-call timeouts,
task cancellations and bounded queues that fill up. Every call's outcome is classified and
checked by its own caller, and the processors' counters are compared with what the callers saw.

Used by ``tests/test_stress.py``: about a minute by default, as long as you like with
``BATCHED_STRESS_SECONDS``. Nothing here asserts on timing: the run lasts ``seconds``, and waits
for the end are guards that only fail a run that hangs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import batched
from batched import aio
from conftest import wait_until

# The outcomes a call may have; each call has exactly one.
KINDS = ("result", "user_error", "timeout", "queue_full", "cancelled")

# How long the end of a run may take before it counts as a hang.
GUARD_SECONDS = 60.0

# Every this many calls of a batch function on a bounded processor, it holds its batch until the
# queue is full (at most HOLD_SECONDS), so that the bound is really hit while the load runs.
HOLD_EVERY = 25
HOLD_SECONDS = 0.5

# Problems kept per caller and per run; the rest are only counted.
MAX_PROBLEMS = 20


class Poisoned(Exception):
    """What a batch function raises for a batch holding a poison item (a negative one)."""

    def __init__(self, items: Sequence[int]) -> None:
        super().__init__(f"poison item in a batch of {len(items)}")
        self.items = tuple(items)


def expected(item: int) -> int:
    """The result the batch functions compute for an item."""
    return item * 3 + 1


def item_length(item: int) -> int:
    """An item's length, for the length-aware processor."""
    return abs(item) % 37 + 1


@dataclass(frozen=True)
class Spec:
    """One processor of the run: ``flavour`` is "thread" (:class:`batched.BatchProcessor`, called
    from threads and with ``acall`` from tasks), "async_def" or "plain_def"
    (:class:`batched.aio.AsyncBatchProcessor` with that kind of function, awaited by tasks)."""

    name: str
    flavour: str
    options: dict[str, Any]

    @property
    def isolate(self) -> bool:
        return self.options.get("on_error") == "isolate"

    @property
    def limit(self) -> int | None:
        limit: int | None = self.options.get("max_queue_size")
        return limit

    @property
    def blocks(self) -> bool:
        return self.options.get("on_full") == "block"


SPECS = (
    Spec("thread", "thread", {"batch_size": 16, "timeout_ms": 2.0}),
    Spec(
        "thread_isolate_raise",
        "thread",
        {
            "batch_size": 8,
            "timeout_ms": 1.0,
            "small_batch_threshold": 2,
            "max_queue_size": 24,
            "on_full": "raise",
            "on_error": "isolate",
        },
    ),
    Spec(
        "thread_block",
        "thread",
        {"batch_size": 32, "timeout_ms": 3.0, "max_queue_size": 48, "on_full": "block"},
    ),
    Spec(
        "thread_packed_isolate",
        "thread",
        {
            "batch_size": 16,
            "timeout_ms": 2.0,
            "sort_by_length": True,
            "max_batch_tokens": 160,
            "length_fn": item_length,
            "on_error": "isolate",
        },
    ),
    Spec(
        "async_def_isolate_raise",
        "async_def",
        {
            "batch_size": 16,
            "timeout_ms": 2.0,
            "max_queue_size": 64,
            "on_full": "raise",
            "on_error": "isolate",
        },
    ),
    Spec(
        "async_def_block",
        "async_def",
        {
            "batch_size": 32,
            "timeout_ms": 1.0,
            "max_queue_size": 40,
            "on_full": "block",
            "max_concurrent_batches": 4,
        },
    ),
    Spec(
        "plain_def_isolate_block",
        "plain_def",
        {
            "batch_size": 16,
            "timeout_ms": 2.0,
            "max_queue_size": 32,
            "on_full": "block",
            "on_error": "isolate",
            "max_concurrent_batches": 2,
        },
    ),
    Spec("plain_def", "plain_def", {"batch_size": 24, "timeout_ms": 1.0}),
)


@dataclass
class Config:
    seconds: float = 45.0
    threads: int = 64
    tasks: int = 2000
    loops: int = 2
    seed: int = 0
    guard: float = GUARD_SECONDS


@dataclass
class CallPlan:
    items: list[int]
    single: bool  # called with the bare item rather than a list
    timeout: float | None
    priority: int
    cancel: float | None  # tasks only: cancel after this many seconds (0: before it starts)


class Bitmap:
    """A growable set of non-negative ints, one bit each."""

    def __init__(self) -> None:
        self.bits = bytearray(1 << 16)

    def add(self, value: int) -> bool:
        """Adds ``value``; returns False if it was already there."""
        byte, bit = divmod(value, 8)
        if byte >= len(self.bits):
            self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
        mask = 1 << bit
        if self.bits[byte] & mask:
            return False
        self.bits[byte] |= mask
        return True


class BatchFunction:
    """The batch function of one processor, counting what it was given: how the processor's
    statistics must come out, and whether any item was dispatched twice."""

    def __init__(self, spec: Spec, stop: threading.Event) -> None:
        self.spec = spec
        self.stop = stop
        self.batch_size: int = spec.options["batch_size"]
        self.budget: int | None = spec.options.get("max_batch_tokens")
        self.lock = threading.Lock()
        self.invocations = 0
        # Batches and items that settled (the function returned, or raised on a batch that is
        # not split further): what total_batches and total_processed must be.
        self.settled_batches = 0
        self.settled_items = 0
        self.failed_items = 0  # what items_failed must be
        self.max_queue_seen = 0
        self.problems: list[str] = []
        # Without isolation each item may reach the function only once.
        self.seen: Bitmap | None = None if spec.isolate else Bitmap()
        self.processor: Any = None

    def _enter(self, items: list[int]) -> bool:
        """Checks and counts a batch; returns whether to hold it until the queue is full."""
        with self.lock:
            self.invocations += 1
            if len(items) > self.batch_size:
                self._problem(f"a batch of {len(items)} items, batch_size={self.batch_size}")
            if self.budget is not None and len(items) > 1:
                padded = len(items) * max(item_length(item) for item in items)
                if padded > self.budget:
                    self._problem(f"a batch of {padded} padded positions > {self.budget}")
            if self.seen is not None:
                for item in items:
                    if not self.seen.add(abs(item)):
                        self._problem(f"item {item} dispatched twice")
            return (
                self.spec.limit is not None
                and self.invocations % HOLD_EVERY == 0
                and not self.stop.is_set()
            )

    def _leave(self, items: list[int]) -> list[int]:
        poisoned = any(item < 0 for item in items)
        with self.lock:
            if not poisoned or not self.spec.isolate or len(items) == 1:
                self.settled_batches += 1
                self.settled_items += len(items)
            if poisoned and (not self.spec.isolate or len(items) == 1):
                self.failed_items += len(items)
        if poisoned:
            raise Poisoned(items)
        return [expected(item) for item in items]

    def _queue_full(self) -> bool:
        queued: int = self.processor.stats.queue_size
        with self.lock:
            self.max_queue_seen = max(self.max_queue_seen, queued)
        assert self.spec.limit is not None
        return queued >= self.spec.limit

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.spec.name}: {text}")

    def __call__(self, items: list[int]) -> list[int]:
        if self._enter(items):
            until = time.monotonic() + HOLD_SECONDS
            while not self._queue_full() and not self.stop.is_set() and time.monotonic() < until:
                time.sleep(0.001)
        return self._leave(items)

    async def run_async(self, items: list[int]) -> list[int]:
        if self._enter(items):
            until = time.monotonic() + HOLD_SECONDS
            while not self._queue_full() and not self.stop.is_set() and time.monotonic() < until:
                await asyncio.sleep(0.001)
        else:
            await asyncio.sleep(0)
        return self._leave(items)


class Target:
    """One processor and the ways to call it."""

    def __init__(self, spec: Spec, stop: threading.Event) -> None:
        self.spec = spec
        self.function = BatchFunction(spec, stop)
        self.processor: Any
        if spec.flavour == "thread":
            self.processor = batched.BatchProcessor(self.function, **spec.options)
        elif spec.flavour == "async_def":
            self.processor = aio.AsyncBatchProcessor(self.function.run_async, **spec.options)
        else:
            self.processor = aio.AsyncBatchProcessor(self.function, **spec.options)
        self.function.processor = self.processor

    def call(self, plan: CallPlan) -> Any:
        """A blocking call, from a thread."""
        arg = plan.items[0] if plan.single else plan.items
        return self.processor(arg, timeout=plan.timeout, priority=plan.priority)

    async def acall(self, plan: CallPlan) -> Any:
        arg = plan.items[0] if plan.single else plan.items
        if self.spec.flavour == "thread":
            return await self.processor.acall(arg, timeout=plan.timeout, priority=plan.priority)
        return await self.processor(arg, timeout=plan.timeout, priority=plan.priority)


class Tally:
    """What one caller (a thread, or all the tasks of one loop) saw."""

    def __init__(self) -> None:
        # (processor, origin, kind) -> calls and items; origin is "thread" or "task".
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.items: Counter[tuple[str, str, str]] = Counter()
        self.submitted: Counter[tuple[str, str]] = Counter()
        self.problems: list[str] = []
        self.problem_count = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def add(self, key: tuple[str, str, str], items: int) -> None:
        self.calls[key] += 1
        self.items[key] += items

    def merge(self, other: Tally) -> None:
        self.calls.update(other.calls)
        self.items.update(other.items)
        self.submitted.update(other.submitted)
        self.problem_count += other.problem_count
        self.problems.extend(other.problems[: max(MAX_PROBLEMS - len(self.problems), 0)])


_ids = itertools.count(1)


def plan_call(rng: random.Random, for_task: bool) -> CallPlan:
    """A random call: mostly single items, some lists up to 120 items (more than some queue
    bounds), a few poison items, a fifth with a timeout, for tasks a tenth cancelled."""
    draw = rng.random()
    if draw < 0.65:
        count = 1
    elif draw < 0.85:
        count = rng.randint(1, 8)
    elif draw < 0.97:
        count = rng.randint(9, 40)
    else:
        count = rng.randint(41, 120)
    items = [next(_ids) for _ in range(count)]
    for index in range(count):
        if rng.random() < 0.003:
            items[index] = -items[index]
    draw = rng.random()
    timeout: float | None
    if draw < 0.80:
        timeout = None
    elif draw < 0.88:
        timeout = rng.uniform(0.0002, 0.003)
    elif draw < 0.96:
        timeout = rng.uniform(0.003, 0.03)
    else:
        timeout = rng.uniform(0.03, 0.3)
    cancel: float | None = None
    if for_task:
        draw = rng.random()
        if draw < 0.03:
            cancel = 0.0
        elif draw < 0.10:
            cancel = rng.uniform(0.0, 0.005)
    return CallPlan(
        items=items,
        single=count == 1 and rng.random() < 0.8,
        timeout=timeout,
        priority=rng.choice((-1, 0, 0, 0, 0, 1, 2)),
        cancel=cancel,
    )


def classify(
    target: Target, plan: CallPlan, outcome: Any, error: BaseException | None, tally: Tally
) -> str:
    """The kind of a call's outcome, after checking it against the call; a wrong result or an
    exception nobody should get becomes a problem (and the kind "unexpected")."""
    spec = target.spec
    where = f"{spec.name} call {plan.items[:4]}{'...' if len(plan.items) > 4 else ''}"
    poisoned = any(item < 0 for item in plan.items)
    if error is None:
        want: Any = [expected(item) for item in plan.items]
        if plan.single:
            want = want[0]
        if poisoned:
            tally.problem(f"{where}: holds a poison item yet got a result")
        elif outcome != want:
            tally.problem(f"{where}: wrong result {outcome!r:.200}")
        return "result"
    if isinstance(error, Poisoned):
        mine = set(plan.items)
        if not mine.intersection(error.items):
            tally.problem(f"{where}: got the error of a batch holding none of its items")
        if not any(item < 0 for item in error.items):
            tally.problem(f"{where}: got a Poisoned error without poison")
        if spec.isolate and (len(error.items) != 1 or error.items[0] not in mine):
            tally.problem(f"{where}: on_error=isolate gave it the error of {error.items}")
        return "user_error"
    if isinstance(error, asyncio.CancelledError):
        if plan.cancel is None:
            tally.problem(f"{where}: cancelled though nobody cancelled it")
        return "cancelled"
    if isinstance(error, TimeoutError):
        if plan.timeout is None:
            tally.problem(f"{where}: TimeoutError without a timeout")
        return "timeout"
    if isinstance(error, batched.QueueFullError):
        if spec.limit is None or (spec.blocks and len(plan.items) <= spec.limit):
            tally.problem(f"{where}: QueueFullError from a queue that should take it")
        return "queue_full"
    text = "".join(traceback.format_exception(error)).strip()
    tally.problem(f"{where}: unexpected {text[-800:]}")
    return "unexpected"


def record(target: Target, plan: CallPlan, origin: str, kind: str, tally: Tally) -> None:
    name = target.spec.name
    tally.add((name, origin, kind), len(plan.items))
    limit = target.spec.limit
    if kind == "queue_full" and limit is not None and len(plan.items) <= limit:
        tally.add((name, origin, "queue_full_at_limit"), len(plan.items))


def thread_caller(
    seed: int, index: int, targets: list[Target], stop: threading.Event, tally: Tally
) -> None:
    rng = random.Random(f"{seed}/thread/{index}")
    try:
        while not stop.is_set():
            target = rng.choice(targets)
            plan = plan_call(rng, for_task=False)
            tally.submitted[(target.spec.name, "thread")] += 1
            try:
                outcome, error = target.call(plan), None
            except Exception as caught:
                outcome, error = None, caught
            kind = classify(target, plan, outcome, error, tally)
            record(target, plan, "thread", kind, tally)
    except BaseException as error:  # the caller itself broke: the run cannot be trusted
        tally.problem(f"thread caller {index} crashed: {error!r}")
        raise


async def task_caller(
    seed: int,
    index: int,
    targets: list[Target],
    stop: threading.Event,
    tally: Tally,
    inflight: dict[int, tuple[Target, CallPlan, asyncio.Task[Any]]],
) -> None:
    rng = random.Random(f"{seed}/task/{index}")
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        target = rng.choice(targets)
        plan = plan_call(rng, for_task=True)
        tally.submitted[(target.spec.name, "task")] += 1
        task = loop.create_task(target.acall(plan))
        handle = None
        if plan.cancel == 0.0:
            task.cancel()
        elif plan.cancel is not None:
            handle = loop.call_later(plan.cancel, task.cancel)
        inflight[index] = (target, plan, task)
        await asyncio.wait([task])
        del inflight[index]
        if handle is not None:
            handle.cancel()
        outcome: Any = None
        error: BaseException | None
        if task.cancelled():
            error = asyncio.CancelledError()
        else:
            error = task.exception()
            outcome = None if error is not None else task.result()
        kind = classify(target, plan, outcome, error, tally)
        record(target, plan, "task", kind, tally)


@dataclass
class LoopRun:
    """One event loop thread and what it reports."""

    index: int
    tally: Tally = field(default_factory=Tally)
    callers_done: threading.Event = field(default_factory=threading.Event)
    leftover_tasks: list[str] = field(default_factory=list)
    # The call each task caller is waiting for, to tell what a hang is waiting on.
    inflight: dict[int, tuple[Target, CallPlan, asyncio.Task[Any]]] = field(default_factory=dict)
    crashed: str | None = None
    thread: threading.Thread | None = None


async def loop_main(
    run: LoopRun,
    config: Config,
    tasks: int,
    targets: list[Target],
    stop: threading.Event,
    may_exit: threading.Event,
) -> None:
    callers = [
        asyncio.ensure_future(
            task_caller(
                config.seed, run.index * 100_000 + i, targets, stop, run.tally, run.inflight
            )
        )
        for i in range(tasks)
    ]
    results = await asyncio.gather(*callers, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            run.tally.problem(f"task caller crashed: {result!r}")
    run.callers_done.set()
    # The loop keeps running until the processors are shut down: an async def processor drains
    # its queue on this loop.
    deadline = time.monotonic() + 3 * config.guard
    while not may_exit.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    current = asyncio.current_task()
    run.leftover_tasks = [repr(task) for task in asyncio.all_tasks() if task is not current]


def loop_thread(run: LoopRun, *args: Any) -> None:
    try:
        asyncio.run(loop_main(run, *args))
    except BaseException as error:
        run.crashed = "".join(traceback.format_exception(error))[-2000:]
        run.callers_done.set()


def queue_is_empty(processor: Any) -> bool:
    return bool(processor.stats.queue_size == 0)


@dataclass
class Report:
    config: Config
    load_seconds: float = 0.0  # from the start until the callers were told to stop
    duration: float = 0.0  # from the start until every caller had finished
    tally: Tally = field(default_factory=Tally)
    problems: list[str] = field(default_factory=list)
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind_counts(self) -> dict[str, dict[str, int]]:
        """Calls and items of each kind, over all processors and callers."""
        counts: dict[str, dict[str, int]] = {}
        for kind in (*KINDS, "unexpected", "queue_full_at_limit"):
            counts[kind] = {
                "calls": sum(n for (_, _, k), n in self.tally.calls.items() if k == kind),
                "items": sum(n for (_, _, k), n in self.tally.items.items() if k == kind),
            }
        return counts

    def submitted(self) -> int:
        return sum(self.tally.submitted.values())

    def summary(self) -> dict[str, Any]:
        counts = self.kind_counts()
        return {
            "seed": self.config.seed,
            "seconds": self.config.seconds,
            "threads": self.config.threads,
            "tasks": self.config.tasks,
            "loops": self.config.loops,
            "load_s": round(self.load_seconds, 2),
            "last_call_ended_after_stop_s": round(self.duration - self.load_seconds, 2),
            "calls_submitted": self.submitted(),
            "calls_by_outcome": {kind: counts[kind]["calls"] for kind in (*KINDS, "unexpected")},
            "items_by_outcome": {kind: counts[kind]["items"] for kind in (*KINDS, "unexpected")},
            "queue_full_at_the_bound": counts["queue_full_at_limit"],
            "processors": self.processors,
            "problems": self.problems,
        }

    def text(self) -> str:
        counts = self.kind_counts()
        lines = [
            f"seed {self.config.seed}: {self.submitted():,} calls in {self.load_seconds:.1f} s "
            f"from {self.config.threads} threads and {self.config.tasks} tasks "
            f"on {self.config.loops} event loops; the last one ended "
            f"{self.duration - self.load_seconds:.1f} s after the load stopped",
        ]
        for kind in (*KINDS, "unexpected"):
            calls, items = counts[kind]["calls"], counts[kind]["items"]
            lines.append(f"  {kind:<11} {calls:>10,} calls {items:>11,} items")
        at_bound = counts["queue_full_at_limit"]["calls"]
        lines.append(f"  (refused by a full queue rather than for its size: {at_bound:,} calls)")
        columns = (
            "total_processed",
            "total_batches",
            "items_failed",
            "items_timed_out",
            "items_cancelled",
            "items_rejected",
        )
        lines.append(
            f"  {'processor':<24} {'calls':>9} "
            + " ".join(f"{column.removeprefix('items_'):>15}" for column in columns)
            + "  max queue"
        )
        for name, info in self.processors.items():
            numbers = " ".join(f"{info['stats'][column]:>15,}" for column in columns)
            lines.append(
                f"  {name:<24} {info['submitted']:>9,} {numbers}  {info['max_queue_seen']:>9}"
            )
        lines.append(f"  problems: {len(self.problems)}")
        lines.extend(f"    {problem}" for problem in self.problems[:40])
        return "\n".join(lines)


def run(config: Config) -> Report:
    """Runs the workload for ``config.seconds`` and checks everything afterwards. The batch
    functions fail on purpose thousands of times, so the library's log record for each failed
    batch is turned off meanwhile."""
    log = logging.getLogger("batched")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return _run(config)
    finally:
        log.setLevel(level)


def _run(config: Config) -> Report:
    report = Report(config)
    before = set(threading.enumerate())
    stop = threading.Event()
    may_exit = threading.Event()
    targets = [Target(spec, stop) for spec in SPECS]
    thread_targets = [t for t in targets if t.spec.flavour == "thread"]
    tallies = [Tally() for _ in range(config.threads)]
    callers = [
        threading.Thread(
            target=thread_caller,
            args=(config.seed, i, thread_targets, stop, tallies[i]),
            name=f"stress-caller-{i}",
            daemon=True,
        )
        for i in range(config.threads)
    ]
    loops = [LoopRun(i) for i in range(config.loops)]
    for i, loop_run in enumerate(loops):
        tasks = config.tasks // config.loops + (i < config.tasks % config.loops)
        loop_run.thread = threading.Thread(
            target=loop_thread,
            args=(loop_run, config, tasks, targets, stop, may_exit),
            name=f"stress-loop-{i}",
            daemon=True,
        )
    started = time.monotonic()
    for thread in callers:
        thread.start()
    for loop_run in loops:
        assert loop_run.thread is not None
        loop_run.thread.start()
    stop.wait(config.seconds)
    stop.set()
    report.load_seconds = time.monotonic() - started

    # The end: every caller must finish, every queue must empty, every processor must stop.
    until = time.monotonic() + config.guard
    for thread in callers:
        thread.join(max(until - time.monotonic(), 0.0))
    stuck = [thread.name for thread in callers if thread.is_alive()]
    if stuck:
        report.problems.append(f"{len(stuck)} caller threads still waiting: {stuck[:8]}")
    for loop_run in loops:
        if not loop_run.callers_done.wait(max(until - time.monotonic(), 0.0)):
            report.problems.append(f"event loop {loop_run.index}: callers still waiting")
    report.duration = time.monotonic() - started
    hung = bool(report.problems)
    if hung:
        describe_hang(report, targets, loops)
    for target in targets:
        try:
            wait_until(
                partial(queue_is_empty, target.processor),
                f"{target.spec.name}'s queue to empty",
                max(until - time.monotonic(), 0.0),
            )
        except AssertionError:  # a finding of the report, not the end of the run
            size = target.processor.stats.queue_size
            report.problems.append(f"{target.spec.name}: {size} items still queued")
    for target in targets:
        # After a hang, fail what is queued so the callers are released; otherwise drain.
        target.processor.shutdown(drain=not hung)
    may_exit.set()
    for loop_run in loops:
        assert loop_run.thread is not None
        loop_run.thread.join(max(until - time.monotonic(), 1.0))
        if loop_run.thread.is_alive():
            report.problems.append(f"event loop {loop_run.index} did not finish")
        if loop_run.crashed:
            report.problems.append(f"event loop {loop_run.index} crashed: {loop_run.crashed}")
        if loop_run.leftover_tasks:
            report.problems.append(
                f"event loop {loop_run.index}: tasks left over {loop_run.leftover_tasks[:4]}"
            )

    for tally in [*tallies, *(loop_run.tally for loop_run in loops)]:
        report.tally.merge(tally)
    report.problems.extend(report.tally.problems)
    if report.tally.problem_count > len(report.tally.problems):
        report.problems.append(f"... {report.tally.problem_count} caller problems in all")
    for target in targets:
        report.problems.extend(target.function.problems)
        check_processor(report, target)
    check_totals(report)
    leaked = [
        thread.name
        for thread in threading.enumerate()
        if thread not in before and thread.is_alive()
    ]
    if leaked:
        report.problems.append(f"threads still alive after the run: {leaked[:8]}")
    return report


def describe_hang(report: Report, targets: list[Target], loops: list[LoopRun]) -> None:
    """What the callers still waiting wait for, read from outside their loops (racy, but only a
    diagnosis of a run that already failed)."""
    for target in targets:
        stats = target.processor.stats
        report.problems.append(
            f"at the hang {target.spec.name}: queue_size {stats.queue_size}, "
            f"processed {stats.total_processed}, invocations {target.function.invocations}"
        )
    for loop_run in loops:
        for _, (target, plan, task) in list(loop_run.inflight.items())[:10]:
            frames = [
                f"{frame.f_code.co_name}:{frame.f_lineno}" for frame in task.get_stack(limit=8)
            ]
            report.problems.append(
                f"loop {loop_run.index} waits on {target.spec.name}: {len(plan.items)} items, "
                f"timeout {plan.timeout}, priority {plan.priority}, cancel {plan.cancel}, "
                f"done {task.done()}, stack {frames}"
            )
        report.problems.append(f"loop {loop_run.index}: {len(loop_run.inflight)} calls waiting")
    report.problems.append(
        "the processors are now shut down without draining, to release the callers still "
        "waiting: a ProcessorClosedError below is a consequence of that"
    )


def check_processor(report: Report, target: Target) -> None:
    """Compares one processor's statistics with what its callers and its function saw."""
    spec, function, tally = target.spec, target.function, report.tally
    name = spec.name
    stats = target.processor.stats

    def items(kind: str, origin: str | None = None) -> int:
        return sum(
            n
            for (p, o, k), n in tally.items.items()
            if p == name and k == kind and (origin is None or o == origin)
        )

    def calls(kind: str) -> int:
        return sum(n for (p, _, k), n in tally.calls.items() if p == name and k == kind)

    submitted = sum(n for (p, _), n in tally.submitted.items() if p == name)
    outcomes = sum(n for (p, _, k), n in tally.calls.items() if p == name and k in KINDS)
    unexpected = calls("unexpected")
    problems = report.problems

    def expect(condition: bool, text: str) -> None:
        if not condition:
            problems.append(f"{name}: {text}")

    expect(
        outcomes + unexpected == submitted,
        f"{submitted} calls submitted but {outcomes + unexpected} outcomes counted",
    )
    expect(stats.queue_size == 0, f"queue_size {stats.queue_size} after shutdown")
    expect(
        stats.items_rejected == items("queue_full"),
        f"items_rejected {stats.items_rejected} != {items('queue_full')} items refused",
    )
    expect(
        stats.items_failed == function.failed_items,
        f"items_failed {stats.items_failed} != {function.failed_items} failed in the function",
    )
    expect(
        stats.items_failed >= calls("user_error"),
        f"items_failed {stats.items_failed} < {calls('user_error')} calls failed",
    )
    expect(
        stats.total_processed == function.settled_items,
        f"total_processed {stats.total_processed} != {function.settled_items} settled items",
    )
    expect(
        stats.total_batches == function.settled_batches,
        f"total_batches {stats.total_batches} != {function.settled_batches} settled batches",
    )
    expect(
        stats.total_processed >= items("result") + calls("user_error"),
        "fewer items processed than callers got results for",
    )
    # A thread's TimeoutError is always counted; a task's only if its call was still running
    # (its result may have been on its way to the loop when the timeout fired).
    expect(
        items("timeout", "thread") <= stats.items_timed_out <= items("timeout"),
        f"items_timed_out {stats.items_timed_out} outside "
        f"[{items('timeout', 'thread')}, {items('timeout')}]",
    )
    expect(
        stats.items_cancelled <= items("cancelled"),
        f"items_cancelled {stats.items_cancelled} > {items('cancelled')} items cancelled",
    )
    if spec.limit is not None:
        expect(
            function.max_queue_seen >= spec.limit,
            f"the bound {spec.limit} was never reached (max {function.max_queue_seen})",
        )
        if not spec.blocks:
            expect(items("queue_full_at_limit") > 0, "no call was refused by a full queue")
    report.processors[name] = {
        "flavour": spec.flavour,
        "options": {k: v for k, v in spec.options.items() if k != "length_fn"},
        "submitted": submitted,
        "calls_by_outcome": {kind: calls(kind) for kind in (*KINDS, "unexpected")},
        "items_by_outcome": {kind: items(kind) for kind in (*KINDS, "unexpected")},
        "function_invocations": function.invocations,
        "max_queue_seen": function.max_queue_seen,
        "stats": {
            "queue_size": stats.queue_size,
            "total_processed": stats.total_processed,
            "total_batches": stats.total_batches,
            "items_failed": stats.items_failed,
            "items_timed_out": stats.items_timed_out,
            "items_cancelled": stats.items_cancelled,
            "items_rejected": stats.items_rejected,
        },
    }


def check_totals(report: Report) -> None:
    counts = report.kind_counts()
    outcomes = sum(counts[kind]["calls"] for kind in (*KINDS, "unexpected"))
    if outcomes != report.submitted():
        report.problems.append(f"{report.submitted()} calls submitted, {outcomes} outcomes")
    for kind in KINDS:
        if counts[kind]["calls"] == 0:
            report.problems.append(f"no call ended with {kind}: the run did not exercise it")
    if counts["unexpected"]["calls"]:
        report.problems.append(f"{counts['unexpected']['calls']} calls raised something else")
