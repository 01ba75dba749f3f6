"""Backpressure (``max_queue_size``, ``on_full``), isolating bad items (``on_error``), shutdown
with and without draining, fork safety, and the counters of unserved items.

Waits are handshakes (events, queue sizes), never sleeps that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import batched
import pytest
from batched import aio
from conftest import Gate, await_until, in_forked_child, in_thread, wait_until

pytestmark = pytest.mark.timeout(120)

GUARD = 30.0


class Blocker(Gate):
    """A batch function that records every batch and holds it at the gate, so the queue fills."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Any]] = []
        self.processors: list[batched.BatchProcessor[int, int]] = []

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.hold()
        return [item * 10 for item in items]

    def processor(self, **options: Any) -> batched.BatchProcessor[int, int]:
        """A processor over this function, shut down by the ``blocker`` fixture."""
        self.processors.append(batched.BatchProcessor(self, **options))
        return self.processors[-1]


@pytest.fixture
def blocker() -> Iterator[Blocker]:
    """A Blocker that is released, and whose processors are shut down, when the test ends."""
    held = Blocker()
    yield held
    held.release()
    for processor in held.processors:
        processor.shutdown()


def full_blocking_queue(blocker: Blocker) -> batched.BatchProcessor[int, int]:
    """One-item batches, a queue of one and ``on_full="block"``: item 1 runs (held by
    ``blocker``), item 2 fills the queue, and a further caller must wait for room."""
    f = blocker.processor(batch_size=1, timeout_ms=0, max_queue_size=1, on_full="block")
    in_thread(lambda: f(1))
    assert blocker.entered.wait(GUARD)
    in_thread(lambda: f(2))
    wait_until(lambda: f.stats.queue_size == 1, "item 2 to fill the queue")
    return f


# --------------------------------------------------------------------------------------------
# backpressure


def test_a_full_queue_refuses_a_call_at_once_and_enqueues_none_of_it(blocker: Blocker) -> None:
    f = blocker.processor(batch_size=1, timeout_ms=0, max_queue_size=3)
    running = in_thread(lambda: f(1))
    assert blocker.entered.wait(GUARD)
    queued = [in_thread(lambda n=n: f(n)) for n in (2, 3)]
    wait_until(lambda: f.stats.queue_size == 2)
    with pytest.raises(batched.QueueFullError, match="max_queue_size=3") as refused:
        f([4, 5])
    assert isinstance(refused.value, batched.BatchedError)
    assert f.stats.queue_size == 2  # nothing of the refused call went in
    blocker.release()
    for thread, _ in [running, *queued]:
        thread.join(GUARD)
    assert sorted(outcome[0] for _, outcome in queued) == [20, 30]
    assert f([7]) == [70]  # room again
    assert f.stats.items_rejected == 2
    assert all(4 not in batch and 5 not in batch for batch in blocker.batches)


def test_a_call_larger_than_the_queue_is_refused_even_when_blocking() -> None:
    f = batched.BatchProcessor(lambda xs: xs, max_queue_size=2, on_full="block")
    with f, pytest.raises(batched.QueueFullError, match="can never fit"):
        f([1, 2, 3])


@pytest.mark.parametrize("value", [0, -1])
def test_max_queue_size_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_queue_size must be an integer of at least 1"):
        batched.dynamically(max_queue_size=value)


def test_on_full_and_on_error_are_checked() -> None:
    with pytest.raises(ValueError, match="on_full must be 'raise' or 'block'"):
        batched.dynamically(on_full="wait")  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="on_error must be 'fail' or 'isolate'"):
        aio.dynamically(on_error="skip")  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match="unexpected option 'batchsize'"):
        batched.dynamically(batchsize=3)  # type: ignore[call-overload]


def test_blocking_callers_wait_for_room_then_all_complete(blocker: Blocker) -> None:
    f = blocker.processor(batch_size=2, timeout_ms=0, max_queue_size=2, on_full="block")
    first, first_outcome = in_thread(lambda: f([1, 2]))
    assert blocker.entered.wait(GUARD)
    callers = [in_thread(lambda n=n: f(n)) for n in range(3, 9)]
    # Two fit in the queue; the other four wait for room, with nothing refused.
    wait_until(lambda: f.stats.queue_size == 2)
    assert f.stats.items_rejected == 0
    assert all(thread.is_alive() for thread, _ in callers)
    blocker.release()
    for thread, _ in [(first, first_outcome), *callers]:
        thread.join(GUARD)
        assert not thread.is_alive()
    assert first_outcome == [[10, 20]]
    assert sorted(outcome[0] for _, outcome in callers) == [n * 10 for n in range(3, 9)]
    assert max(len(batch) for batch in blocker.batches) <= 2


def test_a_blocked_caller_times_out_waiting_for_room(blocker: Blocker) -> None:
    f = full_blocking_queue(blocker)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timeout of 0\.05 s"):
        f(3, timeout=0.05)
    assert time.monotonic() - started >= 0.05
    assert f.stats.items_timed_out == 1


def test_shutdown_wakes_callers_blocked_for_room(blocker: Blocker) -> None:
    f = full_blocking_queue(blocker)
    blocked, outcome = in_thread(lambda: f(3))
    time.sleep(0.02)
    assert blocked.is_alive()
    blocker.release()
    f.shutdown(drain=False)
    blocked.join(GUARD)
    assert not blocked.is_alive()
    # It either got in before the close (and was failed or served) or was refused by it.
    assert outcome == [30] or isinstance(outcome[0], batched.ProcessorClosedError)


def blocking_queue(
    kind: str, body: Callable[[list[int]], Any], size: int
) -> tuple[Callable[..., Any], Callable[[], batched.BatchStats]]:
    """An awaitable call over ``body`` whose queue holds ``size`` items and makes callers wait
    for room (``on_full="block"``), with its stats: the thread flavour's ``acall`` for
    ``kind="acall"``, else the asyncio flavour."""
    options: dict[str, Any] = {
        "batch_size": size,
        "timeout_ms": 0,
        "max_queue_size": size,
        "on_full": "block",
    }
    if kind == "acall":
        processor = batched.BatchProcessor(body, **options)
        return processor.acall, lambda: processor.stats
    f = aio.AsyncBatchProcessor(body, **options)
    return f, lambda: f.stats


@pytest.mark.parametrize("kind", ["acall", "async_def", "plain_def"])
def test_async_callers_block_for_room_without_blocking_the_loop(kind: str) -> None:
    gate = Gate()
    batches: list[list[int]] = []

    async def async_body(items: list[int]) -> list[int]:
        batches.append(list(items))
        await gate.hold_async()
        return [x * 10 for x in items]

    def body(items: list[int]) -> list[int]:
        batches.append(list(items))
        gate.hold()
        return [x * 10 for x in items]

    async def main() -> None:
        call, stats = blocking_queue(kind, async_body if kind == "async_def" else body, 2)
        tasks = [asyncio.ensure_future(call(n)) for n in range(1, 9)]
        await await_until(lambda: len(batches) == 1 and stats().queue_size == 2)
        ticks = 0
        for _ in range(5):  # the loop keeps running while six tasks wait for room
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 5
        assert stats().items_rejected == 0
        gate.release()
        assert await asyncio.gather(*tasks) == [n * 10 for n in range(1, 9)]

    asyncio.run(asyncio.wait_for(main(), GUARD))
    assert all(len(batch) <= 2 for batch in batches)


@pytest.mark.parametrize("kind", ["acall", "async_def"])
def test_async_call_times_out_waiting_for_room(kind: str) -> None:
    gate = Gate()

    def body(items: list[int]) -> list[int]:
        gate.hold()
        return items

    async def async_body(items: list[int]) -> list[int]:
        await gate.hold_async()
        return items

    async def main() -> None:
        call, stats = blocking_queue(kind, async_body if kind == "async_def" else body, 1)
        first = asyncio.ensure_future(call(1))
        second = asyncio.ensure_future(call(2))
        await await_until(lambda: stats().queue_size == 1)
        with pytest.raises(TimeoutError, match="no room for this call within its timeout"):
            await call(3, timeout=0.05)
        assert stats().items_timed_out == 1
        gate.release()
        assert await asyncio.gather(first, second) == [1, 2]

    asyncio.run(asyncio.wait_for(main(), GUARD))


@pytest.mark.parametrize("kind", ["acall", "plain_def"])
def test_a_call_that_got_room_and_then_timed_out_names_its_own_timeout(kind: str) -> None:
    gates = {1: Gate(), 2: Gate()}

    def body(items: list[int]) -> list[int]:
        for item in items:
            if item in gates:
                gates[item].hold()
        return items

    async def main() -> None:
        call, stats = blocking_queue(kind, body, 1)
        first = asyncio.ensure_future(call(1))
        second = asyncio.ensure_future(call(2))
        await await_until(lambda: stats().queue_size == 1)
        third = asyncio.ensure_future(call(3, timeout=0.4))
        await asyncio.sleep(0.1)
        gates[1].release()  # 2 runs (and waits for its gate), 3 gets its room and then times out
        with pytest.raises(
            TimeoutError, match=r"the call did not complete within its timeout of 0\.4 s"
        ):
            await third
        gates[2].release()
        assert await asyncio.gather(first, second) == [1, 2]

    try:
        asyncio.run(asyncio.wait_for(main(), GUARD))
    finally:
        for gate in gates.values():
            gate.release()


# --------------------------------------------------------------------------------------------
# isolating bad items


def bad_on_negative(items: list[int]) -> list[int]:
    if any(item < 0 for item in items):
        raise ValueError(f"negative item in {items}")
    return [item * 2 for item in items]


def test_isolate_fails_only_the_callers_of_bad_items() -> None:
    calls: list[list[int]] = []

    def body(items: list[int]) -> list[int]:
        calls.append(list(items))
        return bad_on_negative(items)

    f = batched.BatchProcessor(body, batch_size=8, timeout_ms=50, on_error="isolate")
    with f:
        items = [1, 2, -3, 4, 5, 6, -7, 8]
        results: dict[int, Any] = {}
        threads = []
        for item in items:

            def call(item: int = item) -> None:
                try:
                    results[item] = f(item)
                except ValueError as error:
                    results[item] = error

            threads.append(threading.Thread(target=call))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD)
    for item in items:
        if item < 0:
            assert isinstance(results[item], ValueError)
            assert str(results[item]) == f"negative item in [{item}]"
        else:
            assert results[item] == item * 2
    assert calls[0] == items  # one batch first, then halves
    assert f.stats.items_failed == 2
    assert f.stats.total_processed == 8


def test_without_isolate_the_whole_batch_fails() -> None:
    f = batched.BatchProcessor(bad_on_negative, batch_size=4, timeout_ms=1000)
    with f:
        with pytest.raises(ValueError, match="negative"):
            f([1, -2, 3, 4])
        assert f.stats.items_failed == 4


@pytest.mark.parametrize("kind", ["async_def", "plain_def"])
def test_isolate_in_the_asyncio_flavour(kind: str) -> None:
    async def async_body(items: list[int]) -> list[int]:
        return bad_on_negative(items)

    f = aio.AsyncBatchProcessor(
        async_body if kind == "async_def" else bad_on_negative,
        batch_size=4,
        timeout_ms=1000,
        on_error="isolate",
    )

    async def main() -> list[Any]:
        return await asyncio.gather(*(f(n) for n in (1, -2, 3, 4)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [outcomes[0], *outcomes[2:]] == [2, 6, 8]
    assert isinstance(outcomes[1], ValueError)
    f.shutdown()


def test_isolate_with_inference_rows() -> None:
    np = pytest.importorskip("numpy")

    @batched.inference.dynamically(batch_size=4, timeout_ms=1000, on_error="isolate")
    def model(features: dict[str, Any]) -> Any:
        if (features["x"] < 0).any():
            raise ValueError("negative row")
        return features["x"] * 2

    results: dict[int, Any] = {}

    def call(value: int) -> None:
        try:
            results[value] = model({"x": np.array([[value, value]])})
        except ValueError as error:
            results[value] = error

    threads = [threading.Thread(target=call, args=(v,)) for v in (1, 2, -3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert isinstance(results[-3], ValueError)
    for value in (1, 2, 4):
        assert results[value].tolist() == [[value * 2, value * 2]]
    model.shutdown()


# --------------------------------------------------------------------------------------------
# shutdown


def test_async_def_ashutdown_drains_queued_items() -> None:
    gate = Gate()
    seen: list[str] = []

    async def body(items: list[str]) -> list[str]:
        seen.extend(items)
        if items == ["a"]:
            await gate.hold_async()
        return [x * 2 for x in items]

    f = aio.AsyncBatchProcessor(body, batch_size=1, timeout_ms=0)

    async def main() -> None:
        running = asyncio.ensure_future(f("a"))
        await await_until(lambda: seen == ["a"])
        queued = [asyncio.ensure_future(f(x)) for x in "bc"]
        await await_until(lambda: f.stats.queue_size == 2)
        asyncio.get_running_loop().call_later(0.01, gate.release)
        await f.ashutdown()
        assert f.stats.queue_size == 0
        assert await running == "aa"
        assert await asyncio.gather(*queued) == ["bb", "cc"]
        with pytest.raises(batched.ProcessorClosedError):
            await f("d")

    asyncio.run(asyncio.wait_for(main(), GUARD))
    assert seen == ["a", "b", "c"]


def test_async_def_shutdown_from_another_thread_drains_and_waits() -> None:
    async def body(items: list[int]) -> list[int]:
        await asyncio.sleep(0.001)
        return [x + 1 for x in items]

    f = aio.AsyncBatchProcessor(body, batch_size=4, timeout_ms=60_000)
    results: list[Any] = []

    async def main() -> None:
        tasks = [asyncio.ensure_future(f(n)) for n in range(3)]
        await await_until(lambda: f.stats.queue_size == 3)
        # The 60 s deadline would hold these; a draining shutdown sends them now.
        stopper = threading.Thread(target=f.shutdown)
        stopper.start()
        results.extend(await asyncio.gather(*tasks))
        await asyncio.to_thread(stopper.join, GUARD)
        assert not stopper.is_alive()

    asyncio.run(asyncio.wait_for(main(), GUARD))
    assert results == [1, 2, 3]
    assert f.stats.drain_batches == 1


def test_thread_shutdown_drain_runs_queued_items_and_returns_after_the_worker(
    blocker: Blocker,
) -> None:
    f = blocker.processor(batch_size=1, timeout_ms=0)
    in_thread(lambda: f(1))
    assert blocker.entered.wait(GUARD)
    queued = [in_thread(lambda n=n: f(n)) for n in (2, 3)]
    wait_until(lambda: f.stats.queue_size == 2)
    threading.Timer(0.02, blocker.release).start()
    f.shutdown(drain=True)
    assert not any(worker.is_alive() for worker in f._backend._threads)
    for thread, outcome in queued:
        thread.join(GUARD)
        assert outcome[0] in (20, 30)
    with pytest.raises(batched.ProcessorClosedError):
        f(4)


# --------------------------------------------------------------------------------------------
# counters, histograms


def test_timeouts_and_cancellations_are_counted(blocker: Blocker) -> None:
    f = blocker.processor(batch_size=1, timeout_ms=0)
    in_thread(lambda: f(1))
    assert blocker.entered.wait(GUARD)
    with pytest.raises(TimeoutError):
        f([2, 3], timeout=0.01)

    async def cancel_one() -> None:
        task = asyncio.ensure_future(f.acall(4))
        await await_until(lambda: f.stats.queue_size == 3)  # two timed out, one new
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    stats = f.stats
    assert (stats.items_timed_out, stats.items_cancelled) == (2, 1)


def test_histograms_cumulate_at_the_given_bounds() -> None:
    f = batched.BatchProcessor(lambda xs: xs, batch_size=4, timeout_ms=1000)
    with f:
        f([1, 2, 3, 4])
        f([5, 6, 7, 8, 9, 10])  # batches of 4 and 2
        histograms = f.histograms([0.0, 3600.0], [1, 2, 3, 4, 8])
    sizes, size_sum, batches = histograms["batch_size"]
    assert (sizes, size_sum, batches) == ([0, 1, 1, 3, 3], 10.0, 3)
    waits, wait_sum, items = histograms["queue_wait_seconds"]
    assert waits[-1] == items == 10
    assert wait_sum >= 0
    times, time_sum, count = histograms["batch_time_seconds"]
    assert times[-1] == count == 3
    assert time_sum > 0
    with pytest.raises(ValueError, match="histogram bounds"):
        f.histograms([-1.0], [])


# --------------------------------------------------------------------------------------------
# fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_working_processor() -> None:
    f = batched.BatchProcessor(lambda xs: [x * 3 for x in xs], batch_size=4, timeout_ms=1)
    try:
        assert f(1) == 3  # the worker runs before the fork
        assert tight_loops_then_wait_for_all(f) == tripled_loop_inputs()

        def child() -> list[Any]:
            results = [f(2), f([3, 4]), *asyncio.run(_acall_twice(f))]
            # Tight loops hand their wake-up batons through a keeper thread of the child's.
            assert tight_loops_then_wait_for_all(f) == tripled_loop_inputs()
            return results

        assert in_forked_child(child) == "[6, [9, 12], 15, 18]"
        assert f(7) == 21  # the parent's processor is untouched
    finally:
        f.shutdown()


async def _acall_twice(f: batched.BatchProcessor[int, int]) -> list[int]:
    return list(await asyncio.gather(f.acall(5), f.acall(6)))


# --------------------------------------------------------------------------------------------
# wake-up chains


LOOP_THREADS = 8
LOOP_CALLS = 200


def tight_loops_then_wait_for_all(f: Callable[[int], int]) -> list[list[int]]:
    """Each thread calls ``f`` in a tight loop, then waits (without calling again) until every
    thread has its last result. A thread that calls straight back keeps the baton that wakes the
    next caller of its batch until its next call; after its last call it never comes back, so
    the callers behind it finish only if the baton is handed over without it."""
    barrier = threading.Barrier(LOOP_THREADS, timeout=GUARD)
    results: list[list[int]] = [[] for _ in range(LOOP_THREADS)]

    def loop(k: int) -> None:
        for i in range(LOOP_CALLS):
            results[k].append(f(k * LOOP_CALLS + i))
        barrier.wait()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(LOOP_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert not any(thread.is_alive() for thread in threads), "callers stuck"
    assert not barrier.broken, "some caller never got its last result"
    return results


def tripled_loop_inputs() -> list[list[int]]:
    """What ``tight_loops_then_wait_for_all`` returns for a function that triples its items."""
    return [[3 * (k * LOOP_CALLS + i) for i in range(LOOP_CALLS)] for k in range(LOOP_THREADS)]


def test_callers_that_stop_calling_do_not_hold_up_the_rest_of_their_batch() -> None:
    calls: list[int] = []

    def triple(items: list[int]) -> list[int]:
        calls.append(len(items))
        return [item * 3 for item in items]

    with batched.BatchProcessor(triple, batch_size=4, timeout_ms=1) as f:
        for _ in range(3):  # rounds: each ends with every thread parked on the barrier
            assert tight_loops_then_wait_for_all(f) == tripled_loop_inputs()
        assert sum(calls) == 3 * LOOP_THREADS * LOOP_CALLS
        assert max(calls) > 1, "the loops should have shared batches"


def test_a_bound_method_can_be_wrapped_directly() -> None:
    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def scale(self, items: list[int]) -> list[int]:
            return [item * self.factor for item in items]

    scaler = Scaler(3)
    f = batched.dynamically(batch_size=4)(scaler.scale)
    with f:
        assert f(2) == 6
        assert f([1, 2]) == [3, 6]


def test_a_batch_function_that_makes_blocking_calls_does_not_stall_other_callers() -> None:
    # The worker of `outer` is itself a blocked caller of `inner`, sharing batches with threads
    # that call `inner` directly; whatever baton it keeps, it hands over when it waits again.
    with batched.BatchProcessor(lambda items: [item * 3 for item in items], timeout_ms=1) as inner:

        def outer_batch(items: list[int]) -> list[int]:
            return [value + 1 for value in inner(items)]

        with batched.BatchProcessor(outer_batch, batch_size=4, timeout_ms=1) as outer:
            results: dict[str, list[int]] = {}

            def direct(k: int) -> None:
                results[f"direct{k}"] = [inner(k * 1000 + i) for i in range(300)]

            def nested(k: int) -> None:
                results[f"nested{k}"] = [outer(k * 1000 + i) for i in range(300)]

            threads = [threading.Thread(target=direct, args=(k,)) for k in range(4)]
            threads += [threading.Thread(target=nested, args=(k,)) for k in range(4, 8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(GUARD)
            assert not any(thread.is_alive() for thread in threads), "callers stuck"
            for k in range(4):
                assert results[f"direct{k}"] == [3 * (k * 1000 + i) for i in range(300)]
            for k in range(4, 8):
                assert results[f"nested{k}"] == [3 * (k * 1000 + i) + 1 for i in range(300)]
