"""Tests of the asyncio flavour, ``batched.aio``.

Every test runs both kinds of batch function where it makes sense: an ``async def`` (run on the
caller's event loop) and a plain ``def`` (run in worker threads, off the loop). No assertion
depends on timing; waits use handshakes (events), and hangs are guarded by generous timeouts.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import batched
import pytest
from batched import aio
from conftest import Gate, await_until

pytestmark = pytest.mark.timeout(120)

KINDS = ["async_def", "plain_def"]

# Generous guard against hangs; never reached when the library works.
GUARD = 30.0


# --------------------------------------------------------------------------------------------
# helpers


def run(
    main: Callable[[], Awaitable[Any]],
    *,
    guard: float = GUARD,
    noise: list[dict[str, Any]] | None = None,
) -> Any:
    """Runs ``main()`` in a fresh event loop with a hang guard; with ``noise``, the loop's
    exception handler appends to that list instead (a test then checks that it stays empty)."""

    async def guarded() -> Any:
        if noise is not None:
            asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: noise.append(ctx))
        return await asyncio.wait_for(main(), guard)

    return asyncio.run(guarded())


async def held(call: Awaitable[Any], gate: Gate) -> asyncio.Future[Any]:
    """Starts ``call`` and returns it, running, once its batch is held at ``gate``."""
    running = asyncio.ensure_future(call)
    await await_until(gate.entered.is_set, "the batch to reach the gate")
    return running


def _decorated(
    kind: str,
    body: Callable[[list[Any]], list[Any]],
    *,
    gate: Gate | None = None,
    block_when: Callable[[list[Any]], bool] = lambda items: True,
    **options: Any,
) -> aio.AsyncBatchProcessor[Any, Any]:
    """A decorated batch function of ``kind`` computing ``body(items)``.

    With ``gate``, a batch for which ``block_when(items)`` holds waits at the gate first.
    """
    if kind == "async_def":

        async def batch_async(items: list[Any]) -> list[Any]:
            if gate is not None and block_when(items):
                await gate.hold_async()
            await asyncio.sleep(0)
            return body(items)

        return aio.dynamically(**options)(batch_async)

    def batch_plain(items: list[Any]) -> list[Any]:
        if gate is not None and block_when(items):
            gate.hold()
        return body(items)

    return aio.dynamically(**options)(batch_plain)


Make = Callable[..., aio.AsyncBatchProcessor[Any, Any]]


@pytest.fixture
def make() -> Iterator[Make]:
    """Makes processors as ``_decorated`` does, and shuts them all down when the test ends."""
    made: list[aio.AsyncBatchProcessor[Any, Any]] = []

    def tracked(*args: Any, **kwargs: Any) -> aio.AsyncBatchProcessor[Any, Any]:
        made.append(_decorated(*args, **kwargs))
        return made[-1]

    yield tracked
    for processor in made:
        processor.shutdown()


# --------------------------------------------------------------------------------------------
# basics


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.asyncio
async def test_single_list_and_empty_calls(kind: str, make: Make) -> None:
    calls: list[list[Any]] = []

    def body(items: list[Any]) -> list[Any]:
        calls.append(list(items))
        return [x * 10 for x in items]

    f = make(kind, body, batch_size=8, timeout_ms=1.0)
    assert await f(3) == 30
    assert await f([1, 2, 3]) == [10, 20, 30]
    assert await f([]) == []
    # The empty call never reached the function.
    assert all(batch for batch in calls)
    assert sorted(x for batch in calls for x in batch) == [1, 2, 3, 3]
    # A tuple is one item, not a list of items.
    assert await f((1,)) == (1,) * 10


def test_bare_decorator_on_both_kinds() -> None:
    @aio.dynamically
    async def double_async(items: list[int]) -> list[int]:
        return [2 * x for x in items]

    @aio.dynamically
    def double_plain(items: list[int]) -> list[int]:
        return [2 * x for x in items]

    assert isinstance(double_async, aio.AsyncBatchProcessor)
    assert isinstance(double_plain, aio.AsyncBatchProcessor)
    assert getattr(double_async, "__name__", None) == "double_async"
    assert getattr(double_plain, "__name__", None) == "double_plain"

    async def main() -> tuple[list[int], list[int]]:
        a = await asyncio.gather(*(double_async(i) for i in range(50)))
        b = await asyncio.gather(*(double_plain(i) for i in range(50)))
        return list(a), list(b)

    try:
        a, b = run(main)
        assert a == [2 * i for i in range(50)]
        assert b == [2 * i for i in range(50)]
    finally:
        double_plain.shutdown()
        double_async.shutdown()


def test_invalid_options_are_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="max_concurrent_batches"):
        aio.dynamically(max_concurrent_batches=0)
    with pytest.raises(ValueError, match="batch_size"):
        aio.dynamically(batch_size=0)
    with pytest.raises(TypeError):
        aio.dynamically(batch_size="8")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        aio.dynamically(max_concurrent_batches=1.5)  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------------
# 1. many concurrent tasks, exact results


@pytest.mark.parametrize("kind", KINDS)
def test_ten_thousand_concurrent_tasks_exact_results(kind: str, make: Make) -> None:
    n = 10_000
    seen: Counter[int] = Counter()
    batch_sizes: list[int] = []

    def body(items: list[int]) -> list[int]:
        batch_sizes.append(len(items))
        seen.update(items)
        return [x * 3 + 1 for x in items]

    f = make(kind, body, batch_size=64, timeout_ms=5.0)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(f(i) for i in range(n))))

    results = run(main)
    assert results == [i * 3 + 1 for i in range(n)]
    # Every item reached the function exactly once.
    assert len(seen) == n
    assert set(seen) == set(range(n))
    assert max(seen.values()) == 1
    assert sum(batch_sizes) == n
    assert max(batch_sizes) <= 64
    # Concurrent tasks were actually batched together.
    assert len(batch_sizes) < n
    stats = f.stats
    assert isinstance(stats, batched.BatchStats)
    assert stats.total_processed == n
    assert stats.total_batches == len(batch_sizes)
    assert stats.queue_size == 0
    assert stats.avg_batch_size == pytest.approx(n / len(batch_sizes))


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_single_and_list_calls_exact_results(kind: str, make: Make) -> None:
    seen: Counter[int] = Counter()

    def body(items: list[int]) -> list[int]:
        seen.update(items)
        return [-x for x in items]

    f = make(kind, body, batch_size=16, timeout_ms=2.0)

    async def main() -> list[Any]:
        calls = []
        for i in range(300):
            if i % 3 == 0:
                calls.append(f([10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3, 10 * i + 4]))
            else:
                calls.append(f(10 * i))
        return list(await asyncio.gather(*calls))

    results = run(main)
    expected_items: list[int] = []
    for i, result in enumerate(results):
        if i % 3 == 0:
            items = [10 * i + k for k in range(5)]
            assert result == [-x for x in items]
            expected_items.extend(items)
        else:
            assert result == -10 * i
            expected_items.append(10 * i)
    assert seen == Counter(expected_items)
    assert f.stats.total_processed == len(expected_items)


# --------------------------------------------------------------------------------------------
# where the function runs, and how many batches at once


def test_async_def_runs_on_the_callers_loop() -> None:
    where: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []

    @aio.dynamically(batch_size=4, timeout_ms=1.0)
    async def f(items: list[int]) -> list[int]:
        where.append((asyncio.get_running_loop(), threading.current_thread()))
        return items

    async def main() -> asyncio.AbstractEventLoop:
        assert await asyncio.gather(*(f(i) for i in range(10))) == list(range(10))
        return asyncio.get_running_loop()

    caller_loop = run(main)
    assert where
    assert all(loop is caller_loop for loop, _ in where)
    assert all(thread is threading.main_thread() for _, thread in where)


def test_plain_def_runs_off_the_loop_and_loop_stays_responsive() -> None:
    gate = Gate()
    threads: list[threading.Thread] = []
    released_in_time: list[bool] = []

    @aio.dynamically(batch_size=4, timeout_ms=1.0)
    def f(items: list[int]) -> list[int]:
        threads.append(threading.current_thread())
        gate.entered.set()
        # Blocks until the loop releases it: the loop must keep running meanwhile.
        released_in_time.append(gate.released.wait(GUARD))
        return [x + 1 for x in items]

    async def main() -> tuple[int, int]:
        call = await held(f(41), gate)
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not call.done()
        gate.release()
        return ticks, await call

    try:
        ticks, result = run(main)
        assert ticks == 10
        assert result == 42
        assert released_in_time == [True]
        assert threads
        assert all(thread is not threading.main_thread() for thread in threads)
    finally:
        f.shutdown()


@pytest.mark.parametrize("kind", KINDS)
def test_one_batch_at_a_time_by_default(kind: str) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "batches": 0}

    def enter() -> None:
        with lock:
            state["now"] += 1
            state["batches"] += 1
            state["max"] = max(state["max"], state["now"])

    def leave() -> None:
        with lock:
            state["now"] -= 1

    if kind == "async_def":

        @aio.dynamically(batch_size=4, timeout_ms=1.0)
        async def f(items: list[int]) -> list[int]:
            enter()
            try:
                for _ in range(5):
                    await asyncio.sleep(0)
                return items
            finally:
                leave()

    else:

        @aio.dynamically(batch_size=4, timeout_ms=1.0)
        def f(items: list[int]) -> list[int]:
            enter()
            try:
                time.sleep(0.001)
                return items
            finally:
                leave()

    async def main() -> list[int]:
        return list(await asyncio.gather(*(f(i) for i in range(200))))

    try:
        assert run(main) == list(range(200))
        assert state["batches"] > 1
        assert state["max"] == 1
    finally:
        f.shutdown()


def test_async_def_max_concurrent_batches_overlap() -> None:
    state = {"now": 0, "max": 0}
    overlap = asyncio.Event()

    @aio.dynamically(batch_size=1, timeout_ms=1.0, max_concurrent_batches=3)
    async def f(items: list[int]) -> list[int]:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            if state["now"] >= 2:
                overlap.set()
            await asyncio.wait_for(overlap.wait(), GUARD)
            for _ in range(3):
                await asyncio.sleep(0)
            return [x * 2 for x in items]
        finally:
            state["now"] -= 1

    async def main() -> list[int]:
        return list(await asyncio.gather(*(f(i) for i in range(30))))

    assert run(main) == [2 * i for i in range(30)]
    assert 1 < state["max"] <= 3
    assert f.stats.total_batches == 30


def test_plain_def_max_concurrent_batches_overlap() -> None:
    lock = threading.Lock()
    overlap = threading.Event()
    state = {"now": 0, "max": 0}

    @aio.dynamically(batch_size=1, timeout_ms=1.0, max_concurrent_batches=3)
    def f(items: list[int]) -> list[int]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            if state["now"] >= 2:
                overlap.set()
        try:
            assert overlap.wait(GUARD)
            time.sleep(0.001)
            return [x * 2 for x in items]
        finally:
            with lock:
                state["now"] -= 1

    async def main() -> list[int]:
        return list(await asyncio.gather(*(f(i) for i in range(30))))

    try:
        assert run(main) == [2 * i for i in range(30)]
        assert 1 < state["max"] <= 3
    finally:
        f.shutdown()


# --------------------------------------------------------------------------------------------
# methods


class Model:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.seen: list[int] = []

    # The decorator's annotations do not describe methods yet, hence the ignores.
    @aio.dynamically(batch_size=8, timeout_ms=1.0)  # type: ignore[arg-type]
    async def predict(self, items: list[int]) -> list[int]:
        self.seen.extend(items)
        return [x + self.offset for x in items]

    @aio.dynamically(batch_size=8, timeout_ms=1.0)  # type: ignore[arg-type]
    def predict_plain(self, items: list[int]) -> list[int]:
        self.seen.extend(items)
        return [x + self.offset for x in items]


@pytest.mark.parametrize("method", ["predict", "predict_plain"])
def test_methods_get_a_processor_per_instance(method: str) -> None:
    a, b = Model(1000), Model(2000)
    fa, fb = getattr(a, method), getattr(b, method)
    assert fa is getattr(a, method)
    assert fa is not fb
    assert isinstance(fa, aio.AsyncBatchProcessor)

    async def main() -> tuple[list[int], list[int]]:
        ra = asyncio.gather(*(getattr(a, method)(i) for i in range(40)))
        rb = asyncio.gather(*(getattr(b, method)(i) for i in range(40)))
        return list(await ra), list(await rb)

    try:
        ra, rb = run(main)
        assert ra == [1000 + i for i in range(40)]
        assert rb == [2000 + i for i in range(40)]
        assert sorted(a.seen) == list(range(40))
        assert sorted(b.seen) == list(range(40))
        assert fa.stats.total_processed == 40
        assert fb.stats.total_processed == 40
    finally:
        fa.shutdown()
        fb.shutdown()


# --------------------------------------------------------------------------------------------
# priority


@pytest.mark.parametrize("kind", KINDS)
def test_lower_priority_value_runs_first(kind: str, make: Make) -> None:
    order: list[str] = []
    gate = Gate()

    def body(items: list[str]) -> list[str]:
        order.extend(items)
        return items

    f = make(kind, body, gate=gate, block_when=lambda items: items == ["first"], batch_size=1)

    async def main() -> None:
        first = await held(f("first"), gate)
        waiting = [
            asyncio.ensure_future(f(name, priority=priority))
            for name, priority in [("p5", 5), ("p-1", -1), ("p3", 3), ("p0", 0), ("p1", 1)]
        ]
        await await_until(lambda: f.stats.queue_size == 5)
        gate.release()
        assert await first == "first"
        assert [await task for task in waiting] == ["p5", "p-1", "p3", "p0", "p1"]

    run(main)
    assert order == ["first", "p-1", "p0", "p1", "p3", "p5"]


# --------------------------------------------------------------------------------------------
# 2. cancellation


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_before_dispatch_never_reaches_the_function(kind: str, make: Make) -> None:
    seen: list[Any] = []
    gate = Gate()

    def body(items: list[Any]) -> list[Any]:
        seen.extend(items)
        return [f"r{x}" for x in items]

    f = make(kind, body, gate=gate, block_when=lambda items: items == [0], batch_size=1)
    noise: list[dict[str, Any]] = []

    async def main() -> None:
        busy = await held(f(0), gate)
        doomed = asyncio.ensure_future(f(1))
        await await_until(lambda: f.stats.queue_size == 1)  # item 1 queued, not dispatched
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        gate.release()
        assert await busy == "r0"
        assert await f(2) == "r2"
        assert list(await asyncio.gather(f(3), f(4))) == ["r3", "r4"]
        gc.collect()
        await asyncio.sleep(0)

    run(main, noise=noise)
    assert seen == [0, 2, 3, 4]
    assert 1 not in seen
    stats = f.stats
    assert stats.total_processed == 4
    assert stats.queue_size == 0
    assert noise == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outcome", ["result", "error"])
def test_cancelled_while_in_running_batch_is_quiet(kind: str, outcome: str, make: Make) -> None:
    """Tasks cancelled while their items run: no InvalidStateError, no unretrieved exception.

    The cancelled tasks are the last five of the batch, so that the results of the others do
    not depend on how the batch skips cancelled entries (see the test below).
    """

    class Boom(RuntimeError):
        pass

    gate = Gate()

    def body(items: list[int]) -> list[int]:
        if outcome == "error":
            raise Boom("batch failed")
        return [x + 100 for x in items]

    f = make(kind, body, gate=gate, batch_size=10, timeout_ms=1000.0)
    noise: list[dict[str, Any]] = []

    async def main() -> None:
        tasks = [asyncio.ensure_future(f(i)) for i in range(10)]
        await await_until(gate.entered.is_set)  # all ten are in the running batch
        assert f.stats.queue_size == 0
        for task in tasks[5:]:
            task.cancel()
        for task in tasks[5:]:
            with pytest.raises(asyncio.CancelledError):
                await task
        gate.release()
        for i, task in enumerate(tasks[:5]):
            if outcome == "error":
                with pytest.raises(Boom):
                    await task
            else:
                assert await task == i + 100
        # The processor still serves, and whatever was dropped leaves no trace.
        if outcome == "result":
            assert await f(list(range(10))) == list(range(100, 110))
        for _ in range(5):
            await asyncio.sleep(0.01)
        del tasks
        gc.collect()
        await asyncio.sleep(0)

    run(main, noise=noise)
    gc.collect()
    assert noise == []


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_in_running_batch_does_not_shift_other_results(kind: str, make: Make) -> None:
    gate = Gate()
    f = make(
        kind, lambda items: [x + 100 for x in items], gate=gate, batch_size=10, timeout_ms=1000.0
    )
    noise: list[dict[str, Any]] = []

    async def main() -> dict[int, Any]:
        tasks = [asyncio.ensure_future(f(i)) for i in range(10)]
        await await_until(gate.entered.is_set)
        for task in tasks[::2]:
            task.cancel()
        # Let the cancelled tasks withdraw their calls before the batch finishes.
        await await_until(lambda: all(task.done() for task in tasks[::2]))
        gate.release()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return dict(enumerate(outcomes))

    outcomes = run(main, noise=noise)
    for i, outcome in outcomes.items():
        if i % 2 == 0:
            assert isinstance(outcome, asyncio.CancelledError)
    assert {i: outcomes[i] for i in range(1, 10, 2)} == {i: i + 100 for i in range(1, 10, 2)}
    assert noise == []


# --------------------------------------------------------------------------------------------
# 3. several event loops


@pytest.mark.parametrize("kind", KINDS)
def test_two_successive_asyncio_runs(kind: str, make: Make) -> None:
    f = make(kind, lambda items: [x * x for x in items], batch_size=16, timeout_ms=2.0)

    async def main(start: int) -> list[int]:
        return list(await asyncio.gather(*(f(i) for i in range(start, start + 500))))

    assert run(lambda: main(0)) == [i * i for i in range(500)]
    assert run(lambda: main(500)) == [i * i for i in range(500, 1000)]
    assert run(lambda: main(0)) == [i * i for i in range(500)]
    assert f.stats.total_processed == 1500
    assert f.stats.queue_size == 0


@pytest.mark.parametrize("kind", KINDS)
def test_two_loops_in_two_threads_at_once(kind: str) -> None:
    n = 2000
    lock = threading.Lock()
    seen: Counter[int] = Counter()
    ran_on: dict[int, asyncio.AbstractEventLoop] = {}

    if kind == "async_def":

        @aio.dynamically(batch_size=32, timeout_ms=2.0)
        async def f(items: list[int]) -> list[int]:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0)
            with lock:
                seen.update(items)
                for x in items:
                    ran_on[x] = loop
            return [x * 7 for x in items]

    else:

        @aio.dynamically(batch_size=32, timeout_ms=2.0)
        def f(items: list[int]) -> list[int]:
            with lock:
                seen.update(items)
            return [x * 7 for x in items]

    barrier = threading.Barrier(2, timeout=GUARD)
    results: dict[int, Any] = {}
    loops: dict[int, asyncio.AbstractEventLoop] = {}

    def worker(index: int) -> None:
        start = index * n

        async def main() -> list[int]:
            loops[index] = asyncio.get_running_loop()
            barrier.wait()
            return list(await asyncio.gather(*(f(i) for i in range(start, start + n))))

        try:
            results[index] = run(main)
        except BaseException as error:  # reported by the main thread
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD * 2)
    try:
        assert not any(thread.is_alive() for thread in threads)
        for index in range(2):
            start = index * n
            assert results[index] == [i * 7 for i in range(start, start + n)], results[index]
        assert seen == Counter(range(2 * n))
        assert f.stats.total_processed == 2 * n
        if kind == "async_def":
            # Each loop ran its own callers' items.
            for index in range(2):
                start = index * n
                assert all(ran_on[i] is loops[index] for i in range(start, start + n))
    finally:
        f.shutdown()


# --------------------------------------------------------------------------------------------
# 4. errors


@pytest.mark.parametrize("kind", KINDS)
def test_user_exception_reaches_every_task_of_the_batch(kind: str, make: Make) -> None:
    class ModelError(Exception):
        pass

    failing = {"on": True}
    batches: list[list[int]] = []

    def body(items: list[int]) -> list[int]:
        batches.append(list(items))
        if failing["on"]:
            raise ModelError(f"cannot run {len(items)} items")
        return [x + 1 for x in items]

    f = make(kind, body, batch_size=8, timeout_ms=1000.0)

    async def main() -> None:
        outcomes = await asyncio.gather(*(f(i) for i in range(8)), return_exceptions=True)
        assert len(batches) == 1
        assert len(outcomes) == 8
        for outcome in outcomes:
            assert type(outcome) is ModelError
            assert str(outcome) == "cannot run 8 items"
        # A list call of the failing batch gets it too.
        with pytest.raises(ModelError):
            await f([1, 2, 3, 4, 5, 6, 7, 8])
        failing["on"] = False
        assert await asyncio.gather(*(f(i) for i in range(8))) == list(range(1, 9))
        assert await f(list(range(10, 18))) == list(range(11, 19))

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_output_length_is_a_value_error_naming_both_lengths(kind: str, make: Make) -> None:
    def body(items: list[int]) -> list[int]:
        if -1 in items:
            return [x for x in items[:5]]
        return [x * 2 for x in items]

    f = make(kind, body, batch_size=7, timeout_ms=1000.0)

    async def main() -> None:
        with pytest.raises(ValueError, match="results") as info:
            await f([-1, 1, 2, 3, 4, 5, 6])
        message = str(info.value)
        assert re.search(r"\b5\b", message), message
        assert re.search(r"\b7\b", message), message

        # Every task in a too-short batch hears of it.
        outcomes = await asyncio.gather(*(f(i) for i in range(-1, 6)), return_exceptions=True)
        assert all(isinstance(outcome, ValueError) for outcome in outcomes), outcomes

        # The processor keeps serving.
        assert await f(list(range(7))) == [x * 2 for x in range(7)]
        assert await asyncio.gather(*(f(i) for i in range(7))) == [x * 2 for x in range(7)]

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_non_sequence_output_is_a_type_error(kind: str, make: Make) -> None:
    def body(items: list[int]) -> Any:
        if items == [0]:
            return None
        if items == [1]:
            return {0: "a mapping gives its keys"}
        return [x for x in items]

    f = make(kind, body, batch_size=4, timeout_ms=1.0)

    async def main() -> None:
        with pytest.raises(TypeError, match="NoneType"):
            await f(0)
        with pytest.raises(TypeError, match="returned a dict"):
            await f(1)
        assert await f(5) == 5

    run(main)


# --------------------------------------------------------------------------------------------
# 5. timeout=


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_raises_and_undispatched_item_never_runs(kind: str, make: Make) -> None:
    seen: list[str] = []
    gate = Gate()

    def body(items: list[str]) -> list[str]:
        seen.extend(items)
        return [x.upper() for x in items]

    f = make(kind, body, gate=gate, block_when=lambda items: items == ["busy"], batch_size=1)
    noise: list[dict[str, Any]] = []

    async def main() -> None:
        busy = await held(f("busy"), gate)
        with pytest.raises(TimeoutError):
            await f("late", timeout=0.05)
        gate.release()
        assert await busy == "BUSY"
        # A timeout that is not reached changes nothing.
        assert await f("ok", timeout=GUARD) == "OK"
        assert await f(["a", "b"], timeout=GUARD) == ["A", "B"]

    run(main, noise=noise)
    assert "late" not in seen
    assert seen == ["busy", "ok", "a", "b"]
    assert f.stats.queue_size == 0
    assert noise == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", [None, GUARD])
def test_a_timeout_error_of_the_batch_function_is_not_taken_for_the_callers(
    kind: str, timeout: float | None, make: Make
) -> None:
    def body(items: list[Any]) -> list[Any]:
        raise TimeoutError("the upstream service did not answer")

    f = make(kind, body, batch_size=1)

    async def main() -> None:
        with pytest.raises(TimeoutError, match="upstream service") as raised:
            await f(1, timeout=timeout)
        assert raised.value.args == ("the upstream service did not answer",)

    run(main)


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_while_item_is_running(kind: str, make: Make) -> None:
    gate = Gate()
    f = make(
        kind,
        lambda items: [x + 1 for x in items],
        gate=gate,
        block_when=lambda items: items == [1],
        batch_size=1,
    )
    noise: list[dict[str, Any]] = []

    async def main() -> None:
        # Generous enough for the batch to have started (a worker thread may be slow to
        # wake on a loaded machine); the gate keeps it running past the timeout.
        with pytest.raises(TimeoutError):
            await f(1, timeout=0.5)
        assert gate.entered.is_set()
        gate.release()
        assert await f(2) == 3
        gc.collect()
        await asyncio.sleep(0.01)

    run(main, noise=noise)
    assert noise == []


# --------------------------------------------------------------------------------------------
# 6. idle: no polling, no timer


def _live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    return [handle for handle in loop._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]


def _check_idle_loop(
    f: aio.AsyncBatchProcessor[int, int], traffic: Callable[[], Awaitable[None]]
) -> None:
    """Runs ``traffic`` then checks the loop holds no timer and the processor sets none."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await traffic()
        # Let the last batch's task finish.
        for _ in range(5):
            await asyncio.sleep(0)
        assert _live_timers(loop) == [], "a timer is pending on an idle processor"

        # While idle, nothing schedules timers: count call_at over an idle stretch.
        scheduled: list[Any] = []
        original = loop.call_at

        def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(callback)
            return original(when, callback, *args, **kwargs)

        loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
        try:
            await asyncio.sleep(0.1)  # exactly one call_at: this sleep's own
            await asyncio.sleep(0)
        finally:
            del loop.call_at
        assert len(scheduled) == 1, scheduled
        assert _live_timers(loop) == []
        assert len(loop._ready) == 0  # type: ignore[attr-defined]

    # No asyncio.wait_for here: its own timer would be on the loop. pytest-timeout guards.
    asyncio.run(main())


def test_idle_after_deadline_batches_has_no_timer() -> None:
    @aio.dynamically(batch_size=64, timeout_ms=5.0)
    async def f(items: list[int]) -> list[int]:
        return [x + 1 for x in items]

    async def traffic() -> None:
        for round_ in range(3):
            results = await asyncio.gather(*(f(i) for i in range(10)))
            assert results == list(range(1, 11)), round_
        assert f.stats.deadline_batches >= 3

    _check_idle_loop(f, traffic)


def test_idle_after_full_batches_has_no_timer() -> None:
    # A long deadline: every batch leaves because it is full, and the deadline timer set for
    # the first item must not linger after the queue emptied.
    @aio.dynamically(batch_size=8, timeout_ms=60_000.0)
    async def f(items: list[int]) -> list[int]:
        return [x + 1 for x in items]

    async def traffic() -> None:
        results = await asyncio.gather(*(f(i) for i in range(64)))
        assert results == list(range(1, 65))
        assert f.stats.full_batches == 8

    _check_idle_loop(f, traffic)


# --------------------------------------------------------------------------------------------
# 7. a closed loop never breaks the processor


def call_then_close_its_loop(
    f: aio.AsyncBatchProcessor[str, str], entered: threading.Event
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Calls ``f("first")`` on a new loop in a thread and closes that loop once the batch has
    started (``entered``) and while it still runs. Returns the loop's exception-handler calls
    and the abandoned task, which the caller keeps until it checks those calls."""
    noise: list[dict[str, Any]] = []
    kept: list[Any] = []
    thread_errors: list[BaseException] = []

    def doomed_loop() -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _l, ctx: noise.append(ctx))
        try:
            task = loop.create_task(f("first"))
            kept.append(task)
            loop.run_until_complete(await_until(entered.is_set, "the first batch"))
            assert not task.done()
        except BaseException as error:
            thread_errors.append(error)
        finally:
            loop.close()

    thread = threading.Thread(target=doomed_loop)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive()
    assert thread_errors == []
    return noise, kept


def check_it_serves_on_other_loops(
    f: aio.AsyncBatchProcessor[str, str], noise: list[dict[str, Any]], kept: list[Any]
) -> None:
    async def main() -> list[str]:
        return [await f("second"), *await asyncio.gather(f("third"), f("fourth"))]

    assert run(main) == ["done-second", "done-third", "done-fourth"]
    assert run(main) == ["done-second", "done-third", "done-fourth"]
    kept.clear()
    gc.collect()
    # Only the expected complaint about the abandoned task, nothing from batched.
    assert all("destroyed but it is pending" in ctx.get("message", "") for ctx in noise), noise


def test_closed_loop_never_crashes_the_plain_def_worker() -> None:
    gate = Gate()
    seen: list[str] = []

    @aio.dynamically(batch_size=1, timeout_ms=1.0)
    def f(items: list[str]) -> list[str]:
        seen.extend(items)
        if items == ["first"]:
            gate.hold()
        return [f"done-{x}" for x in items]

    try:
        noise, kept = call_then_close_its_loop(f, gate.entered)
        # The worker now finishes the batch and finds its loop closed.
        gate.release()
        check_it_serves_on_other_loops(f, noise, kept)
        assert seen[0] == "first"
        assert f.stats.total_processed == 7
    finally:
        f.shutdown()


def test_closed_loop_does_not_break_the_async_def_processor() -> None:
    entered = threading.Event()

    @aio.dynamically(batch_size=1, timeout_ms=1.0)
    async def f(items: list[str]) -> list[str]:
        if items == ["first"]:
            entered.set()
            await asyncio.Event().wait()  # never set: the loop closes under it
        return [f"done-{x}" for x in items]

    noise, kept = call_then_close_its_loop(f, entered)
    check_it_serves_on_other_loops(f, noise, kept)


# --------------------------------------------------------------------------------------------
# 8. shutdown


@pytest.mark.parametrize("kind", KINDS)
def test_call_after_shutdown_raises_processor_closed(kind: str, make: Make) -> None:
    f = make(kind, lambda items: items, batch_size=4, timeout_ms=1.0)

    async def main() -> None:
        assert await f(1) == 1
        f.shutdown()
        with pytest.raises(batched.ProcessorClosedError):
            await f(2)
        with pytest.raises(batched.BatchedError):
            await f([3, 4])

    run(main)
    # Also from a fresh loop.
    with pytest.raises(batched.ProcessorClosedError):
        run(lambda: f(5))
    f.shutdown()  # a second shutdown is harmless


def test_async_def_shutdown_without_drain_fails_queued_items_and_finishes_running_batch(
    make: Make,
) -> None:
    gate = Gate()
    seen: list[str] = []

    def body(items: list[str]) -> list[str]:
        seen.extend(items)
        return [x * 2 for x in items]

    f = make("async_def", body, gate=gate, block_when=lambda items: items == ["a"], batch_size=1)

    async def main() -> None:
        running = await held(f("a"), gate)
        queued = asyncio.ensure_future(f("b"))
        await await_until(lambda: f.stats.queue_size == 1)
        f.shutdown(drain=False)
        with pytest.raises(batched.ProcessorClosedError):
            await queued
        gate.release()
        assert await running == "aa"
        with pytest.raises(batched.ProcessorClosedError):
            await f("c")

    run(main)
    assert seen == ["a"]


def test_plain_def_shutdown_drains_queued_items(make: Make) -> None:
    gate = Gate()

    f = make(
        "plain_def",
        lambda items: [x * 2 for x in items],
        gate=gate,
        block_when=lambda items: items == ["a"],
        batch_size=1,
    )

    async def main() -> None:
        running = await held(f("a"), gate)
        queued = asyncio.ensure_future(f("b"))
        await await_until(lambda: f.stats.queue_size == 1)
        releaser = threading.Timer(0.05, gate.release)
        releaser.start()
        # shutdown(drain=True) blocks until the worker is done with what was queued.
        await asyncio.to_thread(f.shutdown)
        releaser.join()
        assert await running == "aa"
        assert await queued == "bb"
        with pytest.raises(batched.ProcessorClosedError):
            await f("c")

    run(main)


# --------------------------------------------------------------------------------------------
# context managers, closed, names


@pytest.mark.parametrize("kind", KINDS)
def test_async_processors_are_context_managers_and_say_when_closed(kind: str, make: Make) -> None:
    import batched.aio.inference
    import numpy as np

    f = make(kind, lambda items: [x + 1 for x in items], batch_size=4, timeout_ms=1.0)

    @batched.aio.inference.dynamically(batch_size=4, timeout_ms=1.0)
    async def total(features: dict[str, Any]) -> Any:
        return features["x"].sum(axis=1, keepdims=True)

    async def main() -> None:
        async with f, total:
            assert not f.closed
            assert not total.closed
            assert await f(1) == 2
            assert (await total(x=np.ones((1, 3)))).tolist() == [[3.0]]
        assert f.closed
        assert total.closed
        assert "closed" in repr(f)
        assert "closed" in repr(total)
        with pytest.raises(batched.ProcessorClosedError):
            await f(2)

    run(main)
    assert total.__name__ == "total"

    g = make(kind, lambda items: items, batch_size=4, timeout_ms=1.0)
    with g:
        assert run(lambda: g(5)) == 5
    assert g.closed
