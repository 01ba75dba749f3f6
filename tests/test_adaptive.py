"""``timeout_ms="auto"``: dispatch at once when waiting does not pay, batch under load.

The rule itself is unit-tested in Rust (rust/adaptive.rs, rust/rules.rs); these tests check
that every flavour wires it up and reports why batches left. No assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
import time

import batched
import pytest
from batched import aio

pytestmark = pytest.mark.timeout(120)


def slow_identity(items: list[int]) -> list[int]:
    time.sleep(0.002)  # a fixed cost per batch, so that batching pays under load
    return items


def test_sparse_calls_leave_at_once_without_waiting_for_a_window() -> None:
    f = batched.BatchProcessor(slow_identity, timeout_ms="auto", max_timeout_ms=60_000)
    with f:
        # A 60 s upper bound: if the rule waited for companions, these calls would hang.
        assert [f(n) for n in range(8)] == list(range(8))
        stats = f.stats
    # Before any cost is learned, and after, a lone call leaves at once.
    assert stats.idle_batches == 8


def test_under_load_batches_grow_and_nothing_is_lost() -> None:
    f = batched.BatchProcessor(slow_identity, batch_size=16, timeout_ms="auto")
    results: list[list[int]] = [[] for _ in range(16)]

    def caller(index: int) -> None:
        results[index] = [f(index * 1000 + n) for n in range(100)]

    with f:
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        stats = f.stats
    assert results == [[i * 1000 + n for n in range(100)] for i in range(16)]
    assert stats.total_processed == 1600
    assert stats.avg_batch_size > 2
    reasons = (
        stats.full_batches + stats.deadline_batches + stats.idle_batches + stats.adaptive_batches
    )
    assert reasons == stats.total_batches


@pytest.mark.parametrize("kind", ["async_def", "plain_def"])
def test_auto_in_the_asyncio_flavour(kind: str) -> None:
    async def async_body(items: list[int]) -> list[int]:
        await asyncio.sleep(0.002)
        return [x * 2 for x in items]

    def body(items: list[int]) -> list[int]:
        time.sleep(0.002)
        return [x * 2 for x in items]

    f = aio.AsyncBatchProcessor(
        async_body if kind == "async_def" else body, timeout_ms="auto", max_timeout_ms=60_000
    )

    async def main() -> None:
        for n in range(5):  # sparse: each leaves at once despite the 60 s bound
            assert await f(n) == 2 * n
        assert await asyncio.gather(*(f(n) for n in range(200))) == [2 * n for n in range(200)]

    asyncio.run(asyncio.wait_for(main(), 60))
    stats = f.stats
    assert stats.idle_batches >= 5
    assert stats.total_processed == 205
    f.shutdown()


def test_auto_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_timeout_ms bounds"):
        batched.dynamically(timeout_ms=5, max_timeout_ms=10)
    with pytest.raises(TypeError, match='number of milliseconds or "auto"'):
        batched.dynamically(timeout_ms="fast")  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="timeout_ms must be a finite number"):
        batched.dynamically(timeout_ms="auto", max_timeout_ms=-1)
    with pytest.raises(TypeError, match="max_timeout_ms must be a number"):
        aio.dynamically(timeout_ms="auto", max_timeout_ms="1")  # type: ignore[typeddict-item]
