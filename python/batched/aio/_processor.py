"""``batched.aio.dynamically`` and :class:`AsyncBatchProcessor`."""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from batched import _core
from batched._decorate import apply_or_defer, check_callable
from batched._delivery import deliver, outcome
from batched._plan import ITEMS, Plan, Resolver, item_lengths, run_batch_async
from batched._processor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SMALL_BATCH_THRESHOLD,
    DEFAULT_TIMEOUT_MS,
    BatchProcessor,
    check_int,
    check_number,
    check_optional_int,
)
from batched._stats import BatchStats

T = TypeVar("T")
U = TypeVar("U")


class _LoopBatcher:
    """Runs one event loop's batches: asks its queue for a batch whenever something changed and
    sets a single timer for the next deadline."""

    def __init__(
        self,
        queue: _core.LoopQueue,
        loop: asyncio.AbstractEventLoop,
        resolve: Resolver,
        limit: int,
        plan: Plan,
    ) -> None:
        self.queue = queue
        self._loop = loop
        self._resolve = resolve
        self._limit = limit
        self._plan = plan
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def nudge(self) -> None:
        if self._running < self._limit:
            self._pump()

    def _pump(self) -> None:
        while self._running < self._limit:
            batch, delay = self.queue.poll()
            if batch is None:
                if delay is not None:
                    self._arm(delay)
                elif self._timer is not None:
                    # Nothing is queued: leave an idle loop without any timer of ours.
                    self._timer.cancel()
                    self._timer = None
                return
            self._running += 1
            task = self._loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _arm(self, delay: float) -> None:
        when = self._loop.time() + delay
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _run(self, batch: _core.Batch) -> None:
        try:
            await run_batch_async(batch, self._resolve, self._plan)
        finally:
            self._running -= 1
            self._pump()

    def close(self) -> None:
        self.queue.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _AsyncCore:
    """Batching for an ``async def`` function: one queue per event loop, shared statistics."""

    def __init__(self, resolve: Resolver, options: dict[str, Any], limit: int, plan: Plan) -> None:
        self._resolve = resolve
        self._options = options
        self._limit = limit
        self._plan = plan
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatcher] = (
            weakref.WeakKeyDictionary()
        )
        # Holds the statistics that every loop's queue adds to.
        self._stats_anchor = self._new_queue(None)
        self._closed = False
        # Most programs use one loop: remember it to skip the weak-dictionary lookup.
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last_batcher: _LoopBatcher | None = None

    def _new_queue(self, share: _core.LoopQueue | None) -> _core.LoopQueue:
        return _core.LoopQueue(
            self._options["batch_size"],
            self._options["timeout_ms"],
            self._options["small_batch_threshold"],
            deliver,
            share,
            self._options["max_batch_tokens"],
            self._options["sort_by_length"],
        )

    def batcher(self, loop: asyncio.AbstractEventLoop) -> _LoopBatcher:
        """The batcher of ``loop``, made on first use; the last one used is found fastest."""
        if loop is self._last_loop and self._last_batcher is not None:
            return self._last_batcher
        if self._closed:
            raise _core.ProcessorClosedError("the batch processor has been shut down")
        batcher = self._batchers.get(loop)
        if batcher is None:
            queue = self._new_queue(self._stats_anchor)
            batcher = _LoopBatcher(queue, loop, self._resolve, self._limit, self._plan)
            self._batchers[loop] = batcher
        self._last_loop, self._last_batcher = loop, batcher
        return batcher

    def stats(self) -> dict[str, Any]:
        return self._stats_anchor.stats()

    def shutdown(self) -> None:
        self._closed = True
        self._last_loop = self._last_batcher = None
        for batcher in list(self._batchers.values()):
            batcher.close()
            batcher.queue.fail_remaining()


class AsyncBatchProcessor(Generic[T, U]):
    """Collects single-item awaits from many tasks into batched calls of ``func``.

    ``func`` takes a list of items and returns (or, if ``async``, resolves to) one result per
    item. ``max_concurrent_batches`` lets that many batches run at once (default 1).
    """

    def __init__(
        self,
        func: Callable[[list[T]], Sequence[U] | Awaitable[Sequence[U]]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
        small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
        max_concurrent_batches: int = 1,
        sort_by_length: bool = False,
        max_batch_tokens: int | None = None,
        length_fn: Callable[[T], int] | None = None,
        _resolve: Resolver | None = None,
        _plan: Plan = ITEMS,
    ) -> None:
        check_callable(func)
        options: dict[str, Any] = {
            "batch_size": check_int("batch_size", batch_size),
            "timeout_ms": check_number("timeout_ms", timeout_ms),
            "small_batch_threshold": check_int("small_batch_threshold", small_batch_threshold),
            "max_batch_tokens": check_optional_int("max_batch_tokens", max_batch_tokens),
            "sort_by_length": bool(sort_by_length),
        }
        limit = check_int("max_concurrent_batches", max_concurrent_batches)
        if limit < 1:
            raise ValueError(f"max_concurrent_batches must be at least 1, got {limit}")
        self._length_of: Callable[[Any], int] | None = None
        if sort_by_length or max_batch_tokens is not None or length_fn is not None:
            self._length_of = length_fn if length_fn is not None else len
        functools.update_wrapper(self, func)
        resolve: Resolver = _resolve if _resolve is not None else (lambda: func)
        self._threaded: BatchProcessor[T, U] | None = None
        self._async: _AsyncCore | None = None
        if inspect.iscoroutinefunction(func):
            self._async = _AsyncCore(resolve, options, limit, _plan)
        else:
            self._threaded = BatchProcessor(
                func,  # type: ignore[arg-type]
                _resolve=resolve,
                _workers=limit,
                _plan=_plan,
                **options,
            )

    @overload
    async def __call__(
        self, item: list[T], /, *, timeout: float | None = ..., priority: int = ...
    ) -> list[U]: ...
    @overload
    async def __call__(
        self, item: T, /, *, timeout: float | None = ..., priority: int = ...
    ) -> U: ...
    async def __call__(
        self, item: Any, /, *, timeout: float | None = None, priority: int = 0
    ) -> Any:
        """Awaits the result for one item (or the list of results for a list of items)."""
        lengths = item_lengths(self._length_of, item)
        return await self._submit(item, timeout, priority, None, lengths)

    async def _submit(
        self,
        item: Any,
        timeout: float | None,
        priority: int,
        rows: int | None,
        lengths: list[int] | None,
    ) -> Any:
        if self._async is None:
            assert self._threaded is not None
            return await self._threaded.acall_rows(item, timeout, priority, rows, lengths)
        loop = asyncio.get_running_loop()
        batcher = self._async.batcher(loop)
        future = loop.create_future()
        ticket, act = batcher.queue.submit(item, loop, future, priority, rows, lengths)
        if ticket is None:
            return []
        if act:
            batcher.nudge()
        return await outcome(future, ticket, timeout)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of this processor's statistics, across all event loops."""
        if self._async is not None:
            return BatchStats(**self._async.stats())
        assert self._threaded is not None
        return self._threaded.stats

    def shutdown(self, drain: bool = True) -> None:
        """Stops the processor. Calls made afterwards raise :class:`ProcessorClosedError`.

        For a plain ``def`` function ``drain`` works as in :meth:`BatchProcessor.shutdown`. For an
        ``async def`` function, batches already running finish and queued items fail with
        :class:`ProcessorClosedError`, since their event loops may no longer be running.
        """
        if self._async is not None:
            self._async.shutdown()
        else:
            assert self._threaded is not None
            self._threaded.shutdown(drain)


@overload
def dynamically(func: Callable[[list[T]], Any], /) -> AsyncBatchProcessor[T, Any]: ...
@overload
def dynamically(
    func: None = None,
    /,
    *,
    batch_size: int = ...,
    timeout_ms: float = ...,
    small_batch_threshold: int = ...,
    max_concurrent_batches: int = ...,
    sort_by_length: bool = ...,
    max_batch_tokens: int | None = ...,
    length_fn: Callable[[T], int] | None = ...,
) -> Callable[[Callable[[list[T]], Any]], AsyncBatchProcessor[T, Any]]: ...
def dynamically(
    func: Callable[[list[T]], Any] | None = None,
    /,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout_ms: float = DEFAULT_TIMEOUT_MS,
    small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
    max_concurrent_batches: int = 1,
    sort_by_length: bool = False,
    max_batch_tokens: int | None = None,
    length_fn: Callable[[T], int] | None = None,
) -> Any:
    """Decorates a batch function (``def`` or ``async def``) so that ``await f(item)`` batches.

    Use it bare or with options, on functions or methods (one processor per instance).
    """
    options: dict[str, Any] = {
        "batch_size": check_int("batch_size", batch_size),
        "timeout_ms": check_number("timeout_ms", timeout_ms),
        "small_batch_threshold": check_int("small_batch_threshold", small_batch_threshold),
        "max_concurrent_batches": check_int("max_concurrent_batches", max_concurrent_batches),
        "sort_by_length": bool(sort_by_length),
        "max_batch_tokens": check_optional_int("max_batch_tokens", max_batch_tokens),
        "length_fn": length_fn,
    }
    _core.validate_policy(
        options["batch_size"],
        options["timeout_ms"],
        options["small_batch_threshold"],
        options["max_batch_tokens"],
        options["sort_by_length"],
    )
    if options["max_concurrent_batches"] < 1:
        raise ValueError(f"max_concurrent_batches must be at least 1, got {max_concurrent_batches}")

    return apply_or_defer(AsyncBatchProcessor, func, options)
