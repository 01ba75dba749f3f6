"""The safety nets that keep callers from waiting forever when the machinery itself fails."""

from __future__ import annotations

import threading
from typing import Any

import batched
import pytest
from batched import _core
from batched._delivery import deliver
from batched._plan import ITEMS
from batched._processor import _serve
from conftest import in_thread, wait_until


def _call_in_thread(core: _core.Processor, item: Any) -> tuple[threading.Thread, list[Any]]:
    return in_thread(lambda: core.call(item))


def test_a_batch_dropped_unsettled_fails_its_callers() -> None:
    core = _core.Processor(_core.Options(batch_size=4, timeout_ms=0.0), deliver)
    thread, outcome = _call_in_thread(core, "x")
    batch = core.next_batch()
    assert batch is not None
    assert batch.items() == ["x"]
    del batch  # a worker that died mid-batch
    thread.join(10)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, batched.BatchedError)
    assert "discarded" in str(error)
    core.close(False)


def test_a_batch_settles_once() -> None:
    core = _core.Processor(_core.Options(batch_size=4, timeout_ms=0.0), deliver)
    thread, outcome = _call_in_thread(core, 3)
    batch = core.next_batch()
    assert batch is not None
    batch.complete([30])
    batch.fail(RuntimeError("too late"))  # ignored: the batch is already settled
    batch.complete([99])
    # Blocked callers are woken when the worker next releases the GIL, in its next_batch().
    core.close(False)
    assert core.next_batch() is None
    thread.join(10)
    assert outcome == [30]


def test_served_callers_wake_once_the_next_batch_is_about_to_run() -> None:
    # While a next batch is ready, the worker leaves the callers it served asleep until that
    # batch's arguments are built (so that they do not compete with it for the GIL), then
    # wakes them with wake_served().
    core = _core.Processor(_core.Options(batch_size=1, timeout_ms=0.0), deliver)
    first, first_outcome = _call_in_thread(core, "a")
    batch = core.next_batch()
    assert batch is not None
    assert batch.items() == ["a"]
    second, second_outcome = _call_in_thread(core, "b")
    wait_until(lambda: core.stats().queue_size == 1, "b to be queued")
    batch.complete(["A"])
    following = core.next_batch()  # ready at once: nobody is woken yet
    assert following is not None
    assert following.items() == ["b"]
    first.join(0.2)
    assert first.is_alive()
    assert first_outcome == []
    following.wake_served()
    first.join(10)
    assert first_outcome == ["A"]
    following.complete(["B"])
    core.close(False)
    assert core.next_batch() is None  # a worker that stops wakes whoever it served
    second.join(10)
    assert second_outcome == ["B"]


class _CoreFailure(BaseException):
    """Stands for a panic surfacing from the core: pyo3 raises PanicException, a BaseException."""


class _BreakingCore:
    """A processor core whose second ``next_batch`` fails."""

    def __init__(self, real: _core.Processor) -> None:
        self.real = real
        self.served = 0

    def next_batch(self) -> _core.Batch | None:
        if self.served:
            raise _CoreFailure("simulated failure in the core")
        self.served += 1
        return self.real.next_batch()

    def close(self, drain: bool) -> None:
        self.real.close(drain)

    def fail_remaining(self) -> None:
        self.real.fail_remaining()


def test_a_worker_that_breaks_releases_every_queued_caller() -> None:
    real = _core.Processor(_core.Options(batch_size=1, timeout_ms=0.0), deliver)
    callers = [_call_in_thread(real, n) for n in range(4)]
    wait_until(lambda: real.stats().queue_size == 4, "four queued calls")
    with pytest.raises(_CoreFailure):
        _serve(_BreakingCore(real), lambda: lambda items: [x * 10 for x in items], ITEMS, False)  # type: ignore[arg-type]
    outcomes = []
    for thread, outcome in callers:
        thread.join(10)
        assert not thread.is_alive()
        outcomes.extend(outcome)
    served = [o for o in outcomes if isinstance(o, int)]
    closed = [o for o in outcomes if isinstance(o, batched.ProcessorClosedError)]
    assert len(served) == 1
    assert served[0] % 10 == 0
    assert len(closed) == 3
    assert real.closed
    # From another thread: this one ran the worker loop, and calls from a worker are refused.
    late, late_outcome = _call_in_thread(real, 1)
    late.join(10)
    assert isinstance(late_outcome[0], batched.ProcessorClosedError)
    with pytest.raises(RuntimeError, match="inside its own batch function"):
        real.call(1)


def test_a_call_entry_without_a_queue_refuses_calls() -> None:
    entry = _core.CallEntry()
    with pytest.raises(batched.ProcessorClosedError):
        entry(1)


def test_calls_reach_the_queue_the_entry_was_bound_to_last() -> None:
    # What a processor restarted after a fork relies on: the entry follows the new queue.
    first = batched.BatchProcessor(lambda items: [item + 1 for item in items], timeout_ms=1)
    second = batched.BatchProcessor(lambda items: [item + 2 for item in items], timeout_ms=1)
    try:
        assert first(1) == 2
        first._bind_core(second._backend.core, None)
        assert first(1) == 3
        assert first([1, 2], timeout=5.0, priority=1) == [3, 4]
        with pytest.raises(TypeError):
            first(item=1)  # type: ignore[call-overload]
    finally:
        first.shutdown()
        second.shutdown()
