"""API fuzzing: random options (valid and invalid), call shapes, per-call ``timeout=`` and
``priority=`` (valid and invalid), cancellations, early shutdowns and batch functions that fail
at random, on every general flavour.

For each case: a decoration either succeeds or raises the documented ``TypeError`` or
``ValueError``; every call ends exactly once, with its own results or an exception its case
allows; nothing stays queued; and once shut down, the processor leaves no thread behind.

The default run is bounded (``FUZZ_EXAMPLES`` cases); ``BATCHED_FUZZ_EXAMPLES=2000 pytest
tests/test_fuzz.py`` runs longer.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import batched
import pytest
from batched import aio
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(600)

GUARD = 30.0
FUZZ_EXAMPLES = int(os.environ.get("BATCHED_FUZZ_EXAMPLES", "60"))
FLAVOURS = ("thread", "acall", "aio_async", "aio_def")

# Items that make the batch function misbehave: raise, or return a mapping instead of rows.
RAISES = -7
RETURNS_A_DICT = -9


class Boom(Exception):
    pass


def result_of(item: Any) -> tuple[str, Any]:
    return ("r", item)


def outputs(items: list[Any]) -> Any:
    if RAISES in items:
        raise Boom(f"the batch function failed on {items!r}")
    if RETURNS_A_DICT in items:
        return dict(enumerate(items))
    return [result_of(item) for item in items]


def length(item: Any) -> int:
    return len(item) if isinstance(item, list) else abs(item) % 5 + 1


# --------------------------------------------------------------------------------------------
# strategies


@dataclass(frozen=True)
class Options:
    given: dict[str, Any]
    valid: bool


def _option(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> Any:
    """A strategy of (value, is_valid)."""
    return st.one_of(
        valid.map(lambda value: (value, True)), invalid.map(lambda value: (value, False))
    )


@st.composite
def options(draw: st.DrawFn, flavour: str) -> Options:
    choices: dict[str, Any] = {
        "batch_size": _option(st.integers(1, 8), st.sampled_from([0, -1, 2.5, "8", True])),
        "timeout_ms": _option(
            st.sampled_from([0, 0.5, 1, 2.0, "auto"]),
            st.sampled_from([-1.0, math.nan, math.inf, "soon", None]),
        ),
        "small_batch_threshold": _option(st.integers(0, 4), st.sampled_from([-1, 1.5])),
        "max_queue_size": _option(st.one_of(st.none(), st.integers(1, 12)), st.just(0)),
        "on_full": _option(st.sampled_from(["raise", "block"]), st.just("wait")),
        "on_error": _option(st.sampled_from(["fail", "isolate"]), st.just("ignore")),
        "sort_by_length": _option(st.booleans(), st.just("yes")),
        "max_batch_tokens": _option(st.one_of(st.none(), st.integers(1, 30)), st.just(0)),
        "length_fn": _option(st.sampled_from([None, length]), st.just(42)),
    }
    if flavour.startswith("aio"):
        choices["max_concurrent_batches"] = _option(st.integers(1, 3), st.just(0))
    given: dict[str, Any] = {}
    valid = True
    for name in draw(st.sets(st.sampled_from(sorted(choices)))):
        value, ok = draw(choices[name])
        given[name] = value
        valid = valid and ok
    if draw(st.integers(0, 19)) == 0:
        given["batch_sise"] = 8  # misspelt: an unknown option
        valid = False
    if "max_batch_tokens" in given or given.get("sort_by_length") is True:
        # Integers have no len(): length-aware options need length_fn (a non-callable one
        # stays invalid).
        given.setdefault("length_fn", length)
        if given["length_fn"] is None:
            given["length_fn"] = length
    return Options(given, valid)


@dataclass(frozen=True)
class Call:
    arg: Any  # one item, a list of items, or a list of lists (each inner list an item)
    timeout: Any
    priority: Any
    cancel_after: float | None  # asyncio flavours: cancel the task after this many seconds

    @property
    def items(self) -> list[Any]:
        return self.arg if isinstance(self.arg, list) else [self.arg]

    @property
    def bad_arguments(self) -> bool:
        bad_timeout = self.timeout is not None and not isinstance(self.timeout, int | float)
        return bad_timeout or not isinstance(self.priority, int)

    @property
    def no_time(self) -> bool:
        return isinstance(self.timeout, int | float) and not self.timeout > 0


ITEMS = st.one_of(st.integers(0, 20), st.sampled_from([RAISES, RETURNS_A_DICT]))
SHAPES = st.one_of(
    ITEMS,
    st.lists(ITEMS, max_size=6),
    st.lists(st.lists(st.integers(0, 9), max_size=4), min_size=1, max_size=3),
)


@st.composite
def calls(draw: st.DrawFn, cancellable: bool) -> Call:
    timeout = draw(
        st.one_of(
            st.none(),
            st.none(),
            st.floats(0.001, 0.05),
            st.sampled_from([0, -1.0, math.nan, math.inf, "1s"]),
        )
    )
    priority = draw(st.one_of(st.integers(-2, 2), st.just("high")))
    cancel_after = draw(st.one_of(st.none(), st.floats(0, 0.005))) if cancellable else None
    return Call(draw(SHAPES), timeout, priority, cancel_after)


@dataclass(frozen=True)
class Case:
    flavour: str
    options: Options
    calls: list[Call]
    delay: float  # how long each batch takes
    shutdown_after: float | None  # shut down while the calls run
    drain: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    flavour = draw(st.sampled_from(FLAVOURS))
    return Case(
        flavour=flavour,
        options=draw(options(flavour)),
        calls=draw(st.lists(calls(flavour != "thread"), max_size=6)),
        delay=draw(st.sampled_from([0.0, 0.0, 0.001, 0.003])),
        shutdown_after=draw(st.one_of(st.none(), st.none(), st.floats(0, 0.01))),
        drain=draw(st.booleans()),
    )


# --------------------------------------------------------------------------------------------
# what a call may end with


def check_outcome(case: Case, call: Call, outcome: Any) -> None:
    """Fails unless ``outcome`` (a value or an exception) is one that ``call`` may end with."""
    given = case.options.given
    if call.bad_arguments:
        assert isinstance(outcome, TypeError), (call, outcome)
        return
    items = call.items
    if not items:  # nothing to run: [] at once, unless the processor is already closed
        assert outcome == [] or (
            case.shutdown_after is not None and isinstance(outcome, batched.ProcessorClosedError)
        ), (call, outcome)
        return
    budget = given.get("max_batch_tokens")
    too_long = budget is not None and any(length(item) > budget for item in items)
    everything = [item for other in case.calls for item in other.items]
    allowed: list[type[BaseException]] = []
    if too_long:
        allowed.append(ValueError)
    if call.timeout is not None:
        allowed.append(TimeoutError)
    if given.get("max_queue_size") is not None:
        allowed.append(batched.QueueFullError)
    if call.cancel_after is not None:
        allowed.append(asyncio.CancelledError)
    if case.shutdown_after is not None:
        allowed.append(batched.ProcessorClosedError)
    # A failing batch fails every caller in it; isolate retries until only the callers of the
    # raising items get Boom (a half that returns a dict still fails all of its callers).
    if RAISES in items or (RAISES in everything and given.get("on_error") != "isolate"):
        allowed.append(Boom)
    if RETURNS_A_DICT in everything:
        allowed.append(TypeError)
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, tuple(allowed)), (call, repr(outcome), allowed)
        return
    misbehaves = RAISES in items or RETURNS_A_DICT in items
    may_succeed = not too_long and not call.no_time and not misbehaves
    assert may_succeed, (call, outcome)
    expected = [result_of(item) for item in items]
    assert outcome == (expected if isinstance(call.arg, list) else expected[0]), (call, outcome)


# --------------------------------------------------------------------------------------------
# running a case


def batched_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("batched:")}


def decorate(case: Case) -> Any:
    delay = case.delay
    if case.flavour == "aio_async":

        async def afunc(items: list[Any]) -> Any:
            if delay:
                await asyncio.sleep(delay)
            return outputs(items)

        return aio.dynamically(**case.options.given)(afunc)

    def func(items: list[Any]) -> Any:
        if delay:
            time.sleep(delay)
        return outputs(items)

    if case.flavour == "aio_def":
        return aio.dynamically(**case.options.given)(func)
    return batched.dynamically(**case.options.given)(func)


def wait_for_empty_queue(f: Any) -> None:
    """Withdrawn items (timed out, cancelled) leave the queue when its worker next looks."""
    wait_until(lambda: f.stats.queue_size == 0, "withdrawn items to leave the queue")


def run_threads(f: Any, case: Case) -> list[list[Any]]:
    outcomes: list[list[Any]] = [[] for _ in case.calls]

    def run(index: int, call: Call) -> None:
        try:
            outcomes[index].append(f(call.arg, timeout=call.timeout, priority=call.priority))
        except Exception as error:
            outcomes[index].append(error)

    threads = [
        threading.Thread(target=run, args=(index, call), daemon=True)
        for index, call in enumerate(case.calls)
    ]
    for thread in threads:
        thread.start()
    if case.shutdown_after is not None:
        time.sleep(case.shutdown_after)
        f.shutdown(drain=case.drain)
    for thread in threads:
        thread.join(GUARD)
        assert not thread.is_alive(), "a caller never ended"
    return outcomes


async def run_tasks(f: Any, case: Case) -> list[list[Any]]:
    outcomes: list[list[Any]] = [[] for _ in case.calls]
    call_of = f.acall if case.flavour == "acall" else f

    async def run(index: int, call: Call) -> None:
        try:
            outcomes[index].append(
                await call_of(call.arg, timeout=call.timeout, priority=call.priority)
            )
        except (Exception, asyncio.CancelledError) as error:
            outcomes[index].append(error)

    tasks = [asyncio.create_task(run(index, call)) for index, call in enumerate(case.calls)]

    async def cancel(task: asyncio.Task[None], after: float) -> None:
        await asyncio.sleep(after)
        task.cancel()

    cancellers = [
        asyncio.create_task(cancel(task, call.cancel_after))
        for task, call in zip(tasks, case.calls, strict=True)
        if call.cancel_after is not None
    ]
    if case.shutdown_after is not None:
        await asyncio.sleep(case.shutdown_after)
        if case.flavour == "acall":
            await asyncio.to_thread(f.shutdown, case.drain)
        else:
            await f.ashutdown(case.drain)
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*tasks, *cancellers, return_exceptions=True)
    for index, task in enumerate(tasks):
        if task.cancelled():  # cancelled before its call started: it never ran
            outcomes[index].append(asyncio.CancelledError())
    # While the loop still runs: an async def processor's queue lives on it.
    await asyncio.to_thread(wait_for_empty_queue, f)
    return outcomes


def run_case(case: Case) -> None:
    before = batched_threads()
    try:
        f = decorate(case)
    except (TypeError, ValueError):
        assert not case.options.valid, case.options
        return
    assert case.options.valid, case.options
    try:
        if case.flavour == "thread":
            outcomes = run_threads(f, case)
        else:
            outcomes = asyncio.run(run_tasks(f, case))
        for call, ended in zip(case.calls, outcomes, strict=True):
            assert len(ended) == 1, (call, ended)  # exactly once
            check_outcome(case, call, ended[0])
        if case.flavour == "thread":
            wait_for_empty_queue(f)
    finally:
        assert f.shutdown(timeout=GUARD) is True
    assert batched_threads() <= before, "a worker thread outlived its processor"


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_every_call_ends_once_with_its_result_or_a_documented_error(case: Case) -> None:
    run_case(case)
