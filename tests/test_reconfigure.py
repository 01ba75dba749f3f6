"""``reconfigure``: live changes of batch size, wait, token budget and concurrency, checked as
at decoration time, applied from the next batch, shown in ``stats``, under concurrent load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import batched
import numpy as np
import pytest
from batched import aio
from conftest import Gate, wait_until

GUARD = 30.0


def recording(sizes: list[int], gate: Gate | None = None) -> Callable[[list[int]], Any]:
    """A batch function doubling its items that records each batch's size, and holds the first
    batch at ``gate``."""

    def double(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if gate is not None and len(sizes) == 1:
            gate.hold()
        return [2 * item for item in items]

    return double


def failure(call: Callable[[], Any]) -> tuple[type[BaseException], str]:
    with pytest.raises((TypeError, ValueError)) as caught:
        call()
    return caught.type, str(caught.value)


# The thread flavour, the asyncio flavour over a def and over an async def function.
def make_thread(func: Callable[[list[int]], Any], **options: Any) -> Any:
    return batched.dynamically(**options)(func)


def make_aio_def(func: Callable[[list[int]], Any], **options: Any) -> Any:
    return aio.dynamically(**options)(func)


def make_aio_async(func: Callable[[list[int]], Any], **options: Any) -> Any:
    async def run(items: list[int]) -> Any:
        return func(items)

    return aio.dynamically(**options)(run)


FLAVOURS = [make_thread, make_aio_def, make_aio_async]


@pytest.mark.parametrize("make", FLAVOURS)
@pytest.mark.parametrize(
    "bad",
    [
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"timeout_ms": -1},
        {"timeout_ms": "soon"},
        {"timeout_ms": float("nan")},
        {"max_batch_tokens": 0},
        {"max_timeout_ms": 3},
        {"timeout_ms": "auto", "max_timeout_ms": -2},
    ],
)
def test_a_bad_value_raises_as_at_decoration_and_changes_nothing(
    make: Any, bad: dict[str, Any]
) -> None:
    decorating = failure(lambda: make(lambda xs: xs, **bad))
    processor = make(lambda xs: xs, batch_size=4, timeout_ms=2)
    try:
        assert failure(lambda: processor.reconfigure(**bad)) == decorating
        assert processor.stats.settings == batched.BatchSettings(batch_size=4, timeout_ms=2.0)
    finally:
        processor.shutdown()


@pytest.mark.parametrize("make", FLAVOURS)
@pytest.mark.parametrize(
    ("option", "value"),
    [("sort_by_length", True), ("on_full", "block"), ("max_queue_size", 8), ("bogus", 1)],
)
def test_options_that_cannot_change_at_runtime_are_refused(
    make: Any, option: str, value: Any
) -> None:
    processor = make(lambda xs: xs)
    try:
        with pytest.raises(TypeError, match=f"cannot change '{option}'.*it takes batch_size"):
            processor.reconfigure(**{option: value})
    finally:
        processor.shutdown()


def test_max_concurrent_batches_changes_only_for_an_async_def_function() -> None:
    threaded = make_aio_def(lambda xs: xs)
    try:
        with pytest.raises(TypeError, match="worker threads"):
            threaded.reconfigure(max_concurrent_batches=2)
        with pytest.raises(TypeError, match="cannot change 'max_concurrent_batches'"):
            make_thread(lambda xs: xs).reconfigure(max_concurrent_batches=2)
    finally:
        threaded.shutdown()


def test_stats_show_the_options_in_force() -> None:
    processor = make_aio_async(lambda xs: xs, batch_size=8, timeout_ms=2)
    try:
        processor.reconfigure(timeout_ms="auto", max_timeout_ms=3, max_concurrent_batches=2)
        assert processor.stats.settings == batched.BatchSettings(
            batch_size=8, timeout_ms="auto", max_timeout_ms=3.0, max_concurrent_batches=2
        )
        # A fixed timeout_ms replaces "auto" and its bound; the other options stay.
        processor.reconfigure(timeout_ms=1, max_batch_tokens=100)
        assert processor.stats.settings == batched.BatchSettings(
            batch_size=8, timeout_ms=1.0, max_batch_tokens=100, max_concurrent_batches=2
        )
    finally:
        processor.shutdown()


@pytest.mark.parametrize("make", [make_thread, make_aio_def])
def test_a_new_batch_size_applies_from_the_next_batch(make: Any) -> None:
    sizes: list[int] = []
    gate = Gate()
    processor = make(recording(sizes, gate), batch_size=4, timeout_ms=1)
    call = processor if make is make_thread else lambda x: asyncio.run(processor(x))
    try:
        with ThreadPoolExecutor(12) as pool:
            first = pool.submit(call, [0, 1, 2, 3])
            wait_until(gate.entered.is_set, "the first batch to run")
            rest = [pool.submit(call, i) for i in range(10)]
            processor.reconfigure(batch_size=2)
            gate.release()
            assert first.result(GUARD) == [0, 2, 4, 6]
            assert [r.result(GUARD) for r in rest] == [2 * i for i in range(10)]
        assert sizes[0] == 4
        assert max(sizes[1:]) <= 2
        assert processor.stats.settings.batch_size == 2
    finally:
        gate.release()
        processor.shutdown()


def test_a_shorter_timeout_frees_items_already_waiting() -> None:
    processor = make_thread(lambda xs: xs, batch_size=64, timeout_ms=60_000)
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(processor, 7)
            time.sleep(0.05)
            assert not waiting.done()
            processor.reconfigure(timeout_ms=1)
            assert waiting.result(GUARD) == 7
    finally:
        processor.shutdown()


def test_a_shorter_timeout_reaches_an_event_loop_waiting_on_the_old_one() -> None:
    processor = make_aio_async(lambda xs: xs, batch_size=64, timeout_ms=60_000)

    async def main() -> Any:
        waiting = asyncio.ensure_future(processor(7))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        # From another thread, as an admin endpoint served elsewhere would.
        await asyncio.to_thread(processor.reconfigure, timeout_ms=1)
        return await asyncio.wait_for(waiting, GUARD)

    try:
        assert asyncio.run(main()) == 7
    finally:
        processor.shutdown()


def test_a_token_budget_given_at_runtime_measures_items_from_then_on() -> None:
    sizes: list[int] = []

    def lengths(items: list[str]) -> list[int]:
        sizes.append(len(items))
        return [len(item) for item in items]

    processor = batched.dynamically(batch_size=16, timeout_ms=20)(lengths)
    try:
        processor.reconfigure(max_batch_tokens=10)
        with pytest.raises(ValueError, match="max_batch_tokens=10"):
            processor("x" * 11)
        assert processor(["abcd"] * 6) == [4] * 6
        # 2 items of length 4 cost 8 positions; a third would cost 12.
        assert sizes
        assert max(sizes) <= 2
    finally:
        processor.shutdown()


def test_an_inference_processor_reconfigures_its_queue() -> None:
    sizes: list[int] = []

    def model(features: dict[str, np.ndarray]) -> np.ndarray:
        sizes.append(len(features["input_ids"]))
        summed: np.ndarray = features["input_ids"].sum(axis=1, keepdims=True)
        return summed

    processor = batched.inference.dynamically(batch_size=8, timeout_ms=20)(model)
    try:
        processor.reconfigure(batch_size=2)
        rows = np.arange(12).reshape(6, 2)
        assert processor(input_ids=rows).ravel().tolist() == rows.sum(axis=1).tolist()
        assert sizes
        assert max(sizes) <= 2
        assert processor.stats.settings.batch_size == 2
    finally:
        processor.shutdown()


def test_thread_callers_get_their_results_while_another_thread_reconfigures() -> None:
    sizes: list[int] = []
    # Lengths from the start, so that a token budget given later has them.
    processor = make_thread(
        recording(sizes), batch_size=8, timeout_ms=1, length_fn=lambda item: 1 + item % 7
    )
    stop = threading.Event()
    plans: list[dict[str, Any]] = [
        {"batch_size": 3},
        {"batch_size": 16, "timeout_ms": "auto", "max_timeout_ms": 2},
        {"timeout_ms": 0.5, "max_batch_tokens": 64},
        {"batch_size": 5, "max_batch_tokens": None},
    ]

    def reconfigure() -> int:
        changes = 0
        while not stop.is_set():
            processor.reconfigure(**plans[changes % len(plans)])
            changes += 1
            time.sleep(0.002)
        return changes

    def caller(offset: int) -> None:
        for i in range(300):
            item = offset + i
            result = processor(item) if i % 3 else processor([item, item + 1])
            assert result == (2 * item if i % 3 else [2 * item, 2 * item + 2])

    try:
        with ThreadPoolExecutor(17) as pool:
            tuner = pool.submit(reconfigure)
            try:
                callers = [pool.submit(caller, 10_000 * c) for c in range(16)]
                for done in callers:
                    done.result(GUARD * 4)
            finally:
                stop.set()
            assert tuner.result(GUARD) > 10
        assert max(sizes) <= 16
        # Settled on the last plan: a new burst is cut at its batch size.
        processor.reconfigure(batch_size=2)
        sizes.clear()
        assert processor(list(range(9))) == [2 * i for i in range(9)]
        assert max(sizes) <= 2
        assert processor.stats.settings.batch_size == 2
    finally:
        stop.set()
        processor.shutdown()


def test_asyncio_tasks_get_their_results_while_another_thread_reconfigures() -> None:
    sizes: list[int] = []
    running = 0
    most_running = 0

    async def double(items: list[int]) -> list[int]:
        nonlocal running, most_running
        sizes.append(len(items))
        running += 1
        most_running = max(most_running, running)
        await asyncio.sleep(0.002)
        running -= 1
        return [2 * item for item in items]

    processor = aio.dynamically(batch_size=8, timeout_ms=1)(double)
    stop = threading.Event()

    def reconfigure() -> None:
        plans: list[dict[str, Any]] = [
            {"batch_size": 3, "max_concurrent_batches": 4},
            {"batch_size": 12},
        ]
        changes = 0
        while not stop.is_set():
            processor.reconfigure(**plans[changes % 2])
            changes += 1
            time.sleep(0.003)

    async def main() -> None:
        async def one(item: int) -> None:
            assert await processor(item) == 2 * item

        tuner = threading.Thread(target=reconfigure)
        tuner.start()
        try:
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(4000))), GUARD * 4)
        finally:
            stop.set()
            tuner.join()
        processor.reconfigure(batch_size=2, max_concurrent_batches=1)
        sizes.clear()
        assert await processor(list(range(9))) == [2 * i for i in range(9)]
        assert max(sizes) <= 2

    try:
        asyncio.run(main())
        assert most_running > 1  # max_concurrent_batches=4 took effect
        assert processor.stats.settings.max_concurrent_batches == 1
    finally:
        processor.shutdown()
