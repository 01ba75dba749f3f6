"""Misuse and faults: each has one clear outcome, and no caller is left waiting.

Self-calls from inside the batch function, batch functions that hang or raise
``BaseException``, workers that cannot start, outputs whose ``__len__``/``__getitem__`` raise,
bad ``length_fn`` values, interpreter exit and ``fork`` while batches run, and the warning for
many processors of one method. docs/errors.md lists the same outcomes.

Waits are handshakes (events), never sleeps that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import batched
import pytest
from batched import aio, inference
from conftest import Gate, await_until, in_forked_child, in_thread, run_python, wait_until

pytestmark = pytest.mark.timeout(120)

GUARD = 30.0
SELF_CALL = r"inside its own batch function.*deadlock.*directly.*another processor"


# --------------------------------------------------------------------------------------------
# self-calls


def test_a_thread_batch_function_calling_itself_fails_at_once() -> None:
    def helper(x: int) -> int:
        return double(x)  # through a helper: still the worker thread

    @batched.dynamically(timeout_ms=1)
    def double(xs: list[int]) -> list[int]:
        if 0 in xs:
            return [helper(x + 1) for x in xs]
        return [x * 2 for x in xs]

    with double:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=SELF_CALL):
            double(0)
        assert time.monotonic() - started < GUARD / 3  # at once, not after a timeout
        assert double([1, 2]) == [2, 4]  # the processor goes on


def test_a_thread_batch_function_awaiting_itself_on_a_loop_of_its_own_fails_at_once() -> None:
    @batched.dynamically(timeout_ms=1)
    def double(xs: list[int]) -> list[int]:
        if 0 in xs:
            return [asyncio.run(double.acall(x + 1)) for x in xs]
        return [x * 2 for x in xs]

    with double:
        with pytest.raises(RuntimeError, match=SELF_CALL):
            double(0)
        assert double(3) == 6


def test_a_batched_method_calling_itself_fails_at_once() -> None:
    class Model:
        @batched.dynamically(timeout_ms=1)
        def run(self, xs: list[int]) -> list[int]:
            return [self.run(x) if x == 0 else x for x in xs]

    model = Model()
    with pytest.raises(RuntimeError, match=SELF_CALL):
        model.run(0)
    assert model.run(5) == 5
    model.run.shutdown()


def test_a_batch_function_may_call_another_processor() -> None:
    inner = batched.BatchProcessor(lambda xs: [x + 1 for x in xs], timeout_ms=1)
    outer = batched.BatchProcessor(lambda xs: [inner(x) * 10 for x in xs], timeout_ms=1)
    with inner, outer:
        assert outer([1, 2]) == [20, 30]


def test_an_async_def_batch_function_awaiting_itself_fails_at_once() -> None:
    async def helper(x: int) -> int:
        return await double(x)

    @aio.dynamically(timeout_ms=1)
    async def double(xs: list[int]) -> list[int]:
        if 0 in xs:
            # In tasks of its own too: they belong to the running batch.
            return list(await asyncio.gather(*(helper(x + 1) for x in xs)))
        return [x * 2 for x in xs]

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=SELF_CALL):
            await double(0)
        assert time.monotonic() - started < GUARD / 3
        assert await double([1, 2]) == [2, 4]

    asyncio.run(main())


def test_an_async_def_batch_function_may_call_another_async_processor() -> None:
    @aio.dynamically(timeout_ms=1)
    async def inner(xs: list[int]) -> list[int]:
        return [x + 1 for x in xs]

    @aio.dynamically(timeout_ms=1)
    async def outer(xs: list[int]) -> list[int]:
        return [await inner(x) * 10 for x in xs]

    async def main() -> list[int]:
        return list(await asyncio.gather(outer(1), outer(2)))

    assert asyncio.run(main()) == [20, 30]


def test_a_task_that_a_batch_left_behind_may_call_its_processor_later() -> None:
    later: list[asyncio.Task[int]] = []

    @aio.dynamically(timeout_ms=1)
    async def double(xs: list[int]) -> list[int]:
        if 0 in xs:
            gate = asyncio.Event()

            async def after_the_batch() -> int:
                await gate.wait()
                return await double(21)

            later.append(asyncio.create_task(after_the_batch()))
            asyncio.get_running_loop().call_soon(gate.set)
        return [x * 2 for x in xs]

    async def main() -> int:
        assert await double(0) == 0
        return await asyncio.wait_for(later[0], GUARD)

    assert asyncio.run(main()) == 42


def test_a_plain_def_batch_function_of_the_asyncio_flavour_calling_itself_fails_at_once() -> None:
    @aio.dynamically(timeout_ms=1, max_concurrent_batches=2)
    def double(xs: list[int]) -> list[int]:
        if 0 in xs:
            return [asyncio.run(double(x + 1)) for x in xs]
        return [x * 2 for x in xs]

    async def main() -> None:
        with pytest.raises(RuntimeError, match=SELF_CALL):
            await double(0)
        assert await double(4) == 8

    asyncio.run(main())
    double.shutdown()


def test_an_inference_function_calling_itself_fails_at_once() -> None:
    np = pytest.importorskip("numpy")

    @inference.dynamically(timeout_ms=1)
    def model(features: dict[str, Any]) -> Any:
        ids = features["input_ids"]
        if (ids == 0).all():
            return model(input_ids=ids + 1)
        return ids * 2

    with model:
        with pytest.raises(RuntimeError, match=SELF_CALL):
            model(input_ids=np.zeros((1, 3), dtype=np.int64))
        assert model(input_ids=np.ones((1, 3), dtype=np.int64)).tolist() == [[2, 2, 2]]


def test_an_async_inference_function_awaiting_itself_fails_at_once() -> None:
    np = pytest.importorskip("numpy")

    @aio.inference.dynamically(timeout_ms=1)
    async def model(features: dict[str, Any]) -> Any:
        ids = features["input_ids"]
        if (ids == 0).all():
            return await model(input_ids=ids + 1)
        return ids * 2

    async def main() -> None:
        with pytest.raises(RuntimeError, match=SELF_CALL):
            await model(input_ids=np.zeros((1, 2), dtype=np.int64))
        assert (await model(input_ids=np.ones((1, 2), dtype=np.int64))).tolist() == [[2, 2]]

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# a batch function that never returns (until the test lets it)


def times_ten_behind(gate: Gate) -> Callable[[list[int]], list[int]]:
    """A batch function that holds every batch at ``gate`` until the test releases it."""

    def hang(items: list[int]) -> list[int]:
        gate.hold()
        return [item * 10 for item in items]

    return hang


def async_times_ten_behind(gate: Gate) -> Callable[[list[int]], Awaitable[list[int]]]:
    """``times_ten_behind`` as an ``async def`` that waits without blocking its loop."""

    async def hang(items: list[int]) -> list[int]:
        await gate.hold_async()
        return [item * 10 for item in items]

    return hang


@dataclass
class HungBatch:
    """A thread processor whose batch of item 1 hangs at ``gate`` while item 2 is queued."""

    gate: Gate
    processor: batched.BatchProcessor[int, int]
    running: threading.Thread
    running_outcome: list[Any]
    queued: threading.Thread
    queued_outcome: list[Any]

    def finish(self) -> tuple[list[Any], list[Any]]:
        """Releases the batch; returns the outcomes of both calls once they are done."""
        self.gate.release()
        for thread in (self.running, self.queued):
            thread.join(GUARD)
        return self.running_outcome, self.queued_outcome


@pytest.fixture
def hung_batch() -> Iterator[HungBatch]:
    gate = Gate()
    processor = batched.BatchProcessor(times_ten_behind(gate), batch_size=1, timeout_ms=0)
    try:
        running, running_outcome = in_thread(lambda: processor(1))
        assert gate.entered.wait(GUARD)
        queued, queued_outcome = in_thread(lambda: processor(2))
        wait_until(lambda: processor.stats.queue_size == 1, "item 2 to be queued")
        yield HungBatch(gate, processor, running, running_outcome, queued, queued_outcome)
    finally:
        gate.release()
        processor.shutdown()


def test_a_hung_batch_times_out_its_callers_on_schedule() -> None:
    gate = Gate()
    f = batched.BatchProcessor(times_ten_behind(gate), batch_size=1, timeout_ms=0)
    try:
        first, first_outcome = in_thread(lambda: f(1, timeout=0.2))
        assert gate.entered.wait(GUARD)
        started = time.monotonic()
        waits = [0.3, 0.6]
        callers = [in_thread(lambda wait=wait: f(2, timeout=wait)) for wait in waits]
        for (thread, _), wait in zip(callers, waits, strict=True):
            thread.join(GUARD)
            # On schedule: not before its timeout, and not held up by the hung batch.
            assert wait <= time.monotonic() - started < wait + 2.0
        first.join(GUARD)
        for outcome in [first_outcome, *(outcome for _, outcome in callers)]:
            assert isinstance(outcome[0], TimeoutError), outcome
    finally:
        gate.release()
        f.shutdown()
    assert f.stats.items_timed_out == 3


def test_shutdown_without_drain_releases_queued_callers_while_a_batch_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Gate()
    f = batched.BatchProcessor(times_ten_behind(gate), batch_size=1, timeout_ms=0)
    running, running_outcome = in_thread(lambda: f(1))
    assert gate.entered.wait(GUARD)
    queued = [in_thread(lambda i=i: f(i)) for i in range(2, 6)]
    wait_until(lambda: f.stats.queue_size == 4, "four queued calls")
    with caplog.at_level(logging.WARNING, logger="batched"):
        started = time.monotonic()
        assert f.shutdown(drain=False, timeout=0.1) is False  # the worker is still busy
        elapsed = time.monotonic() - started
    assert elapsed < GUARD / 3
    assert "still running a batch" in caplog.text
    for thread, outcome in queued:
        thread.join(GUARD)  # released while the batch still hangs
        assert isinstance(outcome[0], batched.ProcessorClosedError)
    assert not gate.released.is_set()
    assert running.is_alive()
    gate.release()
    running.join(GUARD)
    assert running_outcome == [10]  # the running batch still delivers
    assert f.shutdown(timeout=GUARD) is True  # now the worker has stopped


def test_shutdown_with_drain_and_a_timeout_leaves_queued_items_to_the_worker(
    hung_batch: HungBatch,
) -> None:
    f = hung_batch.processor
    assert f.shutdown(timeout=0.05) is False
    with pytest.raises(batched.ProcessorClosedError):
        f(3)
    assert hung_batch.finish() == ([10], [20])


def test_shutdown_reports_a_stopped_worker_and_checks_its_timeout() -> None:
    f = batched.BatchProcessor(lambda xs: xs, timeout_ms=1)
    assert f(1) == 1
    with pytest.raises(TypeError, match="timeout"):
        f.shutdown(timeout="1")  # type: ignore[arg-type]
    assert f.shutdown(timeout=GUARD) is True
    assert f.shutdown() is True  # again: nothing left to stop
    assert f.shutdown(timeout=math.nan) is True  # NaN: no time to wait, like 0


def test_async_def_shutdown_without_drain_releases_queued_tasks_while_a_batch_hangs() -> None:
    gate = Gate()
    hang = aio.dynamically(batch_size=1, timeout_ms=0)(async_times_ten_behind(gate))

    async def main() -> None:
        running = asyncio.create_task(hang(1))
        await await_until(gate.entered.is_set, "the first batch")
        timed = asyncio.create_task(hang(2, timeout=0.1))
        queued = [asyncio.create_task(hang(i)) for i in range(3, 6)]
        with pytest.raises(TimeoutError):
            await timed
        await asyncio.sleep(0)
        assert hang.shutdown(drain=False) is False  # a batch still runs
        for task in queued:
            with pytest.raises(batched.ProcessorClosedError):
                await asyncio.wait_for(task, GUARD)
        assert not running.done()
        gate.release()
        assert await asyncio.wait_for(running, GUARD) == 10

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# many processors of one method


@pytest.fixture
def warn_above_three() -> Iterator[None]:
    batched.set_processor_warning_threshold(3)
    try:
        yield
    finally:
        batched.set_processor_warning_threshold(256)


@pytest.mark.usefixtures("warn_above_three")
@pytest.mark.parametrize("flavour", ["thread", "aio"])
def test_many_live_processors_of_one_method_warn_once(
    caplog: pytest.LogCaptureFixture, flavour: str
) -> None:
    decorate = batched.dynamically if flavour == "thread" else aio.dynamically

    class Model:
        @decorate(timeout_ms=1)
        def run(self, xs: list[int]) -> list[int]:
            return xs

    class Other:
        @decorate(timeout_ms=1)
        def run(self, xs: list[int]) -> list[int]:
            return xs

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "instances hold live batched" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="batched"):
        models = [Model() for _ in range(6)]
        others = [Other() for _ in range(3)]
        for model in [*models[:3], *others]:
            model.run  # noqa: B018 (fetching the method makes its processor)
        for model in models[:3]:
            model.run  # noqa: B018 (the same processors again)
        assert warnings() == []
        models[3].run  # noqa: B018 (the fourth)
        assert len(warnings()) == 1
        message = warnings()[0].getMessage()
        assert "Model.run" in message
        assert "4 instances" in message
        assert "Share one instance" in message
        assert "set_processor_warning_threshold" in message
        for model in models[4:]:
            model.run  # noqa: B018
        assert len(warnings()) == 1  # once per method
    for model in [*models, *others]:
        model.run.shutdown()


def test_the_processor_warning_threshold_is_checked_and_can_be_turned_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(TypeError, match="int or None"):
        batched.set_processor_warning_threshold(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        batched.set_processor_warning_threshold(0)

    class Model:
        @batched.dynamically(timeout_ms=1)
        def run(self, xs: list[int]) -> list[int]:
            return xs

    batched.set_processor_warning_threshold(None)
    try:
        with caplog.at_level(logging.WARNING, logger="batched"):
            models = [Model() for _ in range(3)]
            for model in models:
                model.run  # noqa: B018
        assert caplog.records == []
    finally:
        batched.set_processor_warning_threshold(256)
    for model in models:
        model.run.shutdown()


# --------------------------------------------------------------------------------------------
# BaseException from the batch function


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_a_base_exception_reaches_every_caller_of_its_batch_and_the_worker_goes_on(
    error: type[BaseException],
) -> None:
    @batched.dynamically(batch_size=4, timeout_ms=50)
    def f(xs: list[int]) -> list[int]:
        if 0 in xs:
            raise error("from the batch function")
        return xs

    with f:
        with pytest.raises(error, match="from the batch function"):
            f([0, 1, 2])
        assert f([3, 4]) == [3, 4]
        assert f.stats.items_failed == 3


def test_generator_exit_in_an_async_def_batch_reaches_its_callers_and_the_loop_goes_on() -> None:
    @aio.dynamically(timeout_ms=1)
    async def f(xs: list[int]) -> list[int]:
        if 0 in xs:
            raise GeneratorExit("from the batch function")
        return xs

    async def main() -> list[int]:
        with pytest.raises(GeneratorExit, match="from the batch function"):
            await f(0)
        return await f([1, 2])

    assert asyncio.run(main()) == [1, 2]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_in_an_async_def_batch_stops_the_loop_as_from_any_task(
    error: type[BaseException],
) -> None:
    @aio.dynamically(timeout_ms=1)
    async def f(xs: list[int]) -> list[int]:
        if 0 in xs:
            raise error("from the batch function")
        return xs

    outcome: list[BaseException] = []

    async def main() -> None:
        try:
            await f(0)
        except BaseException as caught:  # CancelledError: asyncio.run cancels it on the way out
            outcome.append(caught)
            raise

    with pytest.raises(error, match="from the batch function"):
        asyncio.run(main())
    assert len(outcome) == 1
    assert isinstance(outcome[0], asyncio.CancelledError | error)
    assert asyncio.run(f(5)) == 5  # the processor serves the next loop


# --------------------------------------------------------------------------------------------
# a worker thread that cannot start


def _batched_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("batched:")]


def test_a_worker_that_cannot_start_fails_the_decoration_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _batched_threads()
    start = threading.Thread.start
    started: list[threading.Thread] = []

    def start_one_then_fail(thread: threading.Thread) -> None:
        if started:
            raise RuntimeError("can't start new thread")
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_one_then_fail)
    with pytest.raises(RuntimeError, match=r"could not start a worker thread.*can't start new"):

        @aio.dynamically(max_concurrent_batches=3)
        def f(xs: list[int]) -> list[int]:
            return xs

    monkeypatch.undo()
    started[0].join(GUARD)  # the worker that did start has stopped
    assert not started[0].is_alive()
    assert _batched_threads() == before


def test_a_method_whose_worker_cannot_start_fails_when_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Model:
        @batched.dynamically
        def run(self, xs: list[int]) -> list[int]:
            return xs

    def fail(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    model = Model()
    monkeypatch.setattr(threading.Thread, "start", fail)
    with pytest.raises(RuntimeError, match="could not start a worker thread"):
        model.run  # noqa: B018
    monkeypatch.undo()
    assert model.run(3) == 3  # a later fetch, with threads to spare, works
    model.run.shutdown()


# --------------------------------------------------------------------------------------------
# outputs whose __len__ or __getitem__ raise


class Broken(Exception):
    pass


class _BadLength:
    def __len__(self) -> int:
        raise Broken("from __len__")

    def __getitem__(self, index: int) -> int:
        return index


class _BadRows:
    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> int:
        if index == 1:
            raise Broken("from __getitem__")
        if index >= self._count:
            raise IndexError(index)
        return index


@pytest.mark.parametrize(
    ("output", "message"),
    [
        pytest.param(lambda xs: _BadLength(), "from __len__", id="len"),
        pytest.param(lambda xs: _BadRows(len(xs)), "from __getitem__", id="getitem"),
    ],
)
def test_an_output_whose_len_or_getitem_raises_fails_its_callers_with_that_error(
    output: Callable[[list[int]], Any], message: str
) -> None:
    f = batched.BatchProcessor(lambda xs: output(xs) if 0 in xs else xs, timeout_ms=1)
    with f:
        with pytest.raises(Broken, match=message):
            f([0, 1, 2])
        assert f(7) == 7

    @aio.dynamically(timeout_ms=1)
    async def g(xs: list[int]) -> Any:
        return output(xs) if 0 in xs else xs

    async def main() -> int:
        with pytest.raises(Broken, match=message):
            await g([0, 1, 2])
        return await g(7)

    assert asyncio.run(main()) == 7


# --------------------------------------------------------------------------------------------
# length_fn returning nonsense


class _LengthFailed(Exception):
    pass


def _raises(item: Any) -> int:
    raise _LengthFailed("from length_fn")


@pytest.mark.parametrize(
    ("length_fn", "error", "message"),
    [
        pytest.param(_raises, _LengthFailed, "from length_fn", id="raises"),
        pytest.param(lambda item: 2.5, TypeError, "whole number.*2.5.*float", id="float"),
        pytest.param(lambda item: -1, ValueError, "cannot be negative", id="negative"),
        pytest.param(lambda item: 10**30, ValueError, r"at most 2\*\*63 - 1", id="huge"),
    ],
)
@pytest.mark.parametrize("flavour", ["thread", "acall", "aio"])
def test_a_bad_length_fn_fails_the_call_before_anything_is_queued(
    length_fn: Callable[[Any], Any], error: type[Exception], message: str, flavour: str
) -> None:
    served: list[list[Any]] = []

    def func(xs: list[Any]) -> list[Any]:
        served.append(xs)
        return xs

    async def afunc(xs: list[Any]) -> list[Any]:
        return func(xs)

    options: dict[str, Any] = {"length_fn": length_fn, "sort_by_length": True, "timeout_ms": 1}
    if flavour == "aio":
        g = aio.dynamically(**options)(afunc)
        with pytest.raises(error, match=message):
            asyncio.run(g("x"))
        with pytest.raises(error, match=message):
            asyncio.run(g(["x", "y"]))
        assert g.stats.queue_size == 0
    else:
        f = batched.dynamically(**options)(func)

        def call(item: Any) -> Any:
            return f(item) if flavour == "thread" else asyncio.run(f.acall(item))

        with f:
            for item in ("x", ["x", "y"]):
                with pytest.raises(error, match=message):
                    call(item)
            assert f.stats.queue_size == 0
    assert served == []


def test_huge_lengths_within_range_are_refused_only_by_max_batch_tokens() -> None:
    big = 2**62
    f = batched.BatchProcessor(
        lambda xs: xs, length_fn=lambda item: big, sort_by_length=True, timeout_ms=1
    )
    with f:
        assert f(["a", "b", "c"]) == ["a", "b", "c"]  # padded sizes saturate, never wrap
    g = batched.BatchProcessor(lambda xs: xs, length_fn=lambda item: big, max_batch_tokens=10**6)
    with g, pytest.raises(ValueError, match="max_batch_tokens"):
        g("a")


# --------------------------------------------------------------------------------------------
# interpreter exit and fork while batches run


def test_interpreter_exit_releases_waiting_callers_even_while_a_batch_hangs() -> None:
    # The report runs after batched's exit hook: atexit runs the last registered first.
    code = """
        import atexit, threading, time
        outcomes = {}

        def report():
            deadline = time.monotonic() + 20
            while len(outcomes) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            print(sorted(outcomes.items()), flush=True)

        atexit.register(report)
        import batched

        entered = threading.Event()

        @batched.dynamically(batch_size=1, timeout_ms=0)
        def hang(xs):
            entered.set()
            threading.Event().wait()  # never returns
            return xs

        @batched.dynamically(batch_size=1, timeout_ms=0)
        def slow(xs):
            time.sleep(0.2)
            return [x * 10 for x in xs]

        def call(f, i):
            try:
                outcomes[i] = f(i)
            except BaseException as error:
                outcomes[i] = type(error).__name__

        threading.Thread(target=call, args=(hang, 0), daemon=True).start()
        entered.wait()
        for i in (1, 2, 3):
            threading.Thread(target=call, args=(hang, i), daemon=True).start()
        threading.Thread(target=call, args=(slow, 4)).start()  # not a daemon: exit waits
        threading.Thread(target=call, args=(slow, 5)).start()
        while hang.stats.queue_size < 3:
            time.sleep(0.001)
        """
    started = time.monotonic()
    result = run_python(code)
    elapsed = time.monotonic() - started
    # Caller 0 is inside the batch that never returns; the others all have an outcome.
    expected = [
        (1, "ProcessorClosedError"),
        (2, "ProcessorClosedError"),
        (3, "ProcessorClosedError"),
        (4, 40),
        (5, 50),
    ]
    assert result.stdout.strip() == repr(expected)
    assert elapsed < 30  # the exit hook waits 5 s for the hung worker, then gives up on it


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_a_batch_runs_gives_the_child_a_fresh_processor(
    hung_batch: HungBatch,
) -> None:
    f = hung_batch.processor

    def child() -> list[Any]:  # none of the parent's batch, queue or callers
        hung_batch.gate.release()  # this copy of the gate only
        return [f(3), f([4, 5]), f.stats.queue_size]

    assert in_forked_child(child) == "[30, [40, 50], 0]"
    assert hung_batch.running.is_alive()  # the parent's batch still runs
    assert hung_batch.finish() == ([10], [20])


# --------------------------------------------------------------------------------------------
# timeout=nan


def test_a_nan_timeout_leaves_no_time_in_every_flavour_and_no_broken_timer() -> None:
    f = batched.BatchProcessor(lambda xs: xs, timeout_ms=1)

    @aio.dynamically(timeout_ms=1, max_queue_size=1, on_full="block")
    async def g(xs: list[int]) -> list[int]:
        await asyncio.sleep(0.02)
        return xs

    with pytest.raises(TimeoutError):
        f(1, timeout=math.nan)

    async def main() -> list[int]:
        with pytest.raises(TimeoutError):
            await f.acall(1, timeout=math.nan)
        with pytest.raises(TimeoutError):
            await g(1, timeout=math.nan)
        running = asyncio.create_task(g(2))
        await asyncio.sleep(0.005)
        waiting = asyncio.create_task(g(3))  # fills the queue while 2 runs
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError, match="no room"):
            await g(4, timeout=math.nan)  # a full queue: no time to wait for room either
        # A NaN deadline among the loop's timers would break their order: these must fire.
        return list(await asyncio.wait_for(asyncio.gather(running, waiting), GUARD))

    assert asyncio.run(main()) == [2, 3]
    f.shutdown()


def test_async_def_shutdown_from_another_thread_gives_up_on_a_hung_drain_after_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    gate = Gate()
    hang = aio.dynamically(batch_size=1, timeout_ms=0)(async_times_ten_behind(gate))
    try:
        running = asyncio.run_coroutine_threadsafe(hang(1), loop)
        assert gate.entered.wait(GUARD)
        queued = asyncio.run_coroutine_threadsafe(hang(2), loop)
        wait_until(lambda: hang.stats.queue_size == 1, "item 2 to be queued")
        with caplog.at_level(logging.WARNING, logger="batched"):
            assert hang.shutdown(timeout=0.1) is False
        assert "still draining" in caplog.text
        gate.release()  # from this thread: the gate wakes the loop's waiter safely
        assert running.result(GUARD) == 10
        assert queued.result(GUARD) == 20  # drained once the batch returned
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(GUARD)
        loop.close()
