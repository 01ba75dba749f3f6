"""Issue #6, proof that nothing is lost: 64 threads and 2 000 asyncio tasks on two event loops
call eight processors at once (threads, ``acall``, ``async def`` and plain ``def`` functions)
with single items and lists, poison items, timeouts, cancellations and queues that fill up;
every call must end exactly once, with the right outcome, and the statistics must agree.

The run lasts ``BATCHED_STRESS_SECONDS`` (default 45; an hour makes a real stress run) with the
seed ``BATCHED_STRESS_SEED`` (random by default, printed, and named in every failure). The
workload lives in ``stress_workload.py``. The other test here
pins down, deterministically, a lost wake-up that the stress run found.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import batched
import pytest
import stress_workload
from batched import aio
from conftest import Gate, await_until

SECONDS = float(os.environ.get("BATCHED_STRESS_SECONDS", "45"))
SEED = int(os.environ.get("BATCHED_STRESS_SEED", random.randrange(2**32)))

# The run, then up to a guard each for the callers, the queues and the shutdown.
pytestmark = pytest.mark.timeout(SECONDS + 4 * stress_workload.GUARD_SECONDS)

GUARD = 10.0


@pytest.mark.slow
@pytest.mark.skipif(SECONDS <= 0, reason="BATCHED_STRESS_SECONDS=0")
def test_every_call_ends_exactly_once_with_the_right_outcome() -> None:
    print(f"stress seed {SEED} ({SECONDS:g} s); rerun with BATCHED_STRESS_SEED={SEED}")
    report = stress_workload.run(stress_workload.Config(seconds=SECONDS, seed=SEED))
    print(report.text())
    assert not report.problems, (
        f"seed {SEED} (BATCHED_STRESS_SEED={SEED} repeats its random choices):\n"
        + "\n".join(report.problems)
    )
    counts = report.kind_counts()
    assert sum(counts[kind]["calls"] for kind in stress_workload.KINDS) == report.submitted()


@pytest.mark.parametrize(
    "flavour",
    ["acall", "plain_def", "async_def"],
)
def test_a_task_waiting_for_room_wakes_when_abandoned_items_leave(flavour: str) -> None:
    """Found by the stress run: the bound is full of items whose caller gave up, a task waits
    for room, and the worker frees the room by discarding those items without dispatching any.
    The waiting task must be woken then, not whenever some later call happens to arrive."""
    gate = Gate()

    def body(items: list[int]) -> list[int]:
        gate.hold()
        return [item * 10 for item in items]

    async def async_body(items: list[int]) -> list[int]:
        await gate.hold_async()
        return [item * 10 for item in items]

    options: dict[str, Any] = {
        "batch_size": 1,
        "timeout_ms": 0,
        "max_queue_size": 2,
        "on_full": "block",
    }

    async def main() -> None:
        processor: Any
        if flavour == "acall":
            processor = batched.BatchProcessor(body, **options)
            call: Callable[..., Awaitable[Any]] = processor.acall
        else:
            processor = aio.AsyncBatchProcessor(
                async_body if flavour == "async_def" else body, **options
            )
            call = processor
        waiting: asyncio.Future[Any] | None = None
        try:
            held = asyncio.ensure_future(call(1))  # the worker holds this batch
            await await_until(gate.entered.is_set, "the held batch", GUARD)
            with pytest.raises(TimeoutError):
                await call([2, 3], timeout=0.05)  # fills the bound, then gives up
            # Abandoned, but queued until the worker looks at them.
            assert processor.stats.queue_size == 2
            waiting = asyncio.ensure_future(call(4))
            for _ in range(3):
                await asyncio.sleep(0)  # it found no room and now waits for some
            assert not waiting.done()
            gate.release()
            assert await held == 10
            # The worker discards 2 and 3: the queue is empty and the waiting task must go in.
            woken, _ = await asyncio.wait([waiting], timeout=GUARD)
            queued = processor.stats.queue_size
            assert woken, f"the task waiting for room was never woken (queue_size {queued})"
            assert waiting.result() == 40
        finally:
            gate.release()
            if waiting is not None and not waiting.done():
                waiting.cancel()
            if flavour == "acall":
                processor.shutdown()
            else:
                await processor.ashutdown()

    asyncio.run(main())
