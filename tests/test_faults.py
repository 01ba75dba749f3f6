"""Misuse and faults: each has one clear outcome, and no caller is left waiting.

Self-calls from inside the batch function, batch functions that hang or raise
``BaseException``, workers that cannot start, outputs whose ``__len__``/``__getitem__`` raise,
bad ``length_fn`` values, interpreter exit and ``fork`` while batches run, and the warning for
many processors of one method. The README's fault table lists the same outcomes.

Waits are handshakes (events), never sleeps that a slow machine could outrun.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import batched
import pytest
from batched import aio, inference

pytestmark = pytest.mark.timeout(120)

GUARD = 30.0
SELF_CALL = r"inside its own batch function.*deadlock.*directly.*another processor"


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Runs ``target`` in a daemon thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


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
