"""``batched.aio.dynamically`` and :class:`AsyncBatchProcessor`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, Unpack, overload

from batched import _core
from batched._backend import AsyncManaged, await_item
from batched._decorate import apply_or_defer, check_callable
from batched._delivery import deliver, seconds_left
from batched._log import logger
from batched._options import AsyncBatchOptions, checked, reconfigured
from batched._plan import ITEMS, Plan, Resolver, run_batch_async
from batched._processor import Workers
from batched._reentry import refuse_call_inside_own_batch

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)

# A batch function of either kind: plain, or async.
Results = Sequence[U] | Awaitable[Sequence[U]]


class _LoopBatcher:
    """Runs one event loop's batches: asks its queue for a batch whenever something changed and
    sets a single timer for the next deadline."""

    def __init__(
        self,
        queue: _core.LoopQueue,
        loop: asyncio.AbstractEventLoop,
        resolve: Resolver,
        options: _core.Options,
        plan: Plan,
    ) -> None:
        self.queue = queue
        self.loop = loop
        self._resolve = resolve
        self._limit = options.max_concurrent_batches
        self._isolate = options.isolate
        self._plan = plan
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def nudge(self) -> None:
        if self._running < self._limit:
            self._pump()

    def reconfigure(self, options: _core.Options) -> None:
        """Takes new options from any thread; the loop then polls again under them."""
        self.queue.reconfigure(options)
        self._limit = options.max_concurrent_batches
        with contextlib.suppress(RuntimeError):  # a closed loop has nothing left to wake
            self.loop.call_soon_threadsafe(self.nudge)

    def _pump(self, draining: bool = False) -> None:
        while self._running < self._limit:
            batch, delay = self.queue.poll(draining)
            if batch is None:
                if delay is not None:
                    self._arm(delay)
                elif self._timer is not None:
                    # Nothing is queued: leave an idle loop without any timer of ours.
                    self._timer.cancel()
                    self._timer = None
                return
            self._running += 1
            task = self.loop.create_task(self._run(batch, draining))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _arm(self, delay: float) -> None:
        when = self.loop.time() + delay
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _run(self, batch: _core.Batch, draining: bool) -> None:
        try:
            await run_batch_async(batch, self._resolve, self._plan, self._isolate)
        finally:
            self._running -= 1
            self._pump(draining)

    @property
    def busy(self) -> bool:
        """Whether a batch still runs or waits here."""
        return self._running > 0 or len(self.queue) > 0

    def close(self) -> None:
        self.queue.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drain(self) -> None:
        """Runs everything queued on this loop now, and waits for every running batch."""
        self.close()
        while len(self.queue) or self._tasks:
            self._pump(draining=True)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class Loops:
    """The backend of an ``async def`` batch function: one queue per event loop, whose batches
    run as tasks on that loop, and statistics shared by all of them."""

    def __init__(self, name: str, resolve: Resolver, options: _core.Options, plan: Plan) -> None:
        self._name = name
        self.resolver = self._resolve = resolve  # public: identifies the processor's batches
        self.options = options
        self.length_of = options.length_fn
        self._reconfiguring = threading.Lock()
        self._plan = plan
        self._closed = False
        self._start()
        _live_loops.add(self)

    def _start(self) -> None:
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatcher] = (
            weakref.WeakKeyDictionary()
        )
        # Holds the statistics that every loop's queue adds to.
        self._stats_anchor = self._new_queue(None)
        # Most programs use one loop: the last one used and its batcher, read by every call to
        # skip the weak-dictionary lookup. One tuple, so that loops on other threads cannot
        # pair one loop with another's batcher.
        self.last: tuple[asyncio.AbstractEventLoop | None, _LoopBatcher | None] = (None, None)

    def restart_after_fork(self) -> None:
        """In a forked child, the parent's queues (and their locks) are left behind."""
        if not self._closed:
            self._start()

    def _new_queue(self, share: _core.LoopQueue | None) -> _core.LoopQueue:
        return _core.LoopQueue(self.options, deliver, share)

    def batcher(self, loop: asyncio.AbstractEventLoop) -> _LoopBatcher:
        """The batcher of ``loop``, made on first use; the last one used is found fastest."""
        last_loop, last_batcher = self.last
        if loop is last_loop and last_batcher is not None:
            return last_batcher
        if self._closed:
            raise _core.ProcessorClosedError("the batch processor has been shut down")
        batcher = self._batchers.get(loop)
        if batcher is None:
            with self._reconfiguring:  # so that a concurrent reconfigure reaches this queue
                queue = self._new_queue(self._stats_anchor)
                batcher = _LoopBatcher(queue, loop, self._resolve, self.options, self._plan)
                self._batchers[loop] = batcher
        self.last = (loop, batcher)
        return batcher

    def submit(
        self,
        item: Any,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        priority: int,
        rows: int | None,
        lengths: list[int] | None,
    ) -> _core.Ticket | None:
        refuse_call_inside_own_batch(self.resolver, self._name)
        last_loop, batcher = self.last
        if last_loop is not loop or batcher is None:
            batcher = self.batcher(loop)
        ticket, act = batcher.queue.submit(item, loop, future, priority, rows, lengths)
        if act:
            batcher.nudge()
        return ticket

    def room(self, loop: asyncio.AbstractEventLoop) -> _core.LoopQueue:
        return self.batcher(loop).queue

    def stats(self) -> _core.BatchStats:
        return self._stats_anchor.stats()

    def reconfigure(self, changes: Mapping[str, Any], runtime: frozenset[str]) -> None:
        with self._reconfiguring:
            options = reconfigured(self.options, changes, runtime)
            # Loops made from now on take these; the queues of existing loops are told.
            self.options = options
            self.length_of = options.length_fn
            self._stats_anchor.reconfigure(options)
            for batcher in list(self._batchers.values()):
                batcher.reconfigure(options)
        logger.debug("reconfigured %s: %r", self._name, options.settings)

    @property
    def closed(self) -> bool:
        return self._closed

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        return self._stats_anchor.histograms(time_bounds, size_bounds)

    def _close(self) -> list[_LoopBatcher]:
        self._closed = True
        self.last = (None, None)
        batchers = list(self._batchers.values())
        for batcher in batchers:
            batcher.close()
        return batchers

    def shutdown(self, drain: bool, timeout: float | None) -> bool:
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        waits: list[concurrent.futures.Future[None]] = []
        batchers = self._close()
        for batcher in batchers:
            loop = batcher.loop
            if not drain or loop.is_closed() or not loop.is_running():
                batcher.queue.fail_remaining()
            elif loop is current:
                # This thread runs the loop: the drain can only run once we return.
                loop.create_task(batcher.drain())
            else:
                waits.append(asyncio.run_coroutine_threadsafe(batcher.drain(), loop))
        return _wait_for_drains(waits, timeout) and not any(batcher.busy for batcher in batchers)

    async def ashutdown(self, drain: bool) -> None:
        current = asyncio.get_running_loop()
        waits: list[Awaitable[None]] = []
        for batcher in self._close():
            loop = batcher.loop
            if not drain or loop.is_closed() or not loop.is_running():
                batcher.queue.fail_remaining()
            elif loop is current:
                waits.append(batcher.drain())
            else:
                future = asyncio.run_coroutine_threadsafe(batcher.drain(), loop)
                waits.append(asyncio.wrap_future(future))
        await asyncio.gather(*waits)


def _wait_for_drains(waits: list[concurrent.futures.Future[None]], timeout: float | None) -> bool:
    """Waits for the drains of other threads' loops, ``timeout`` seconds at most in all;
    False (with a warning logged) when one was still running."""
    limit = None if timeout is None else seconds_left(timeout)
    done, running = concurrent.futures.wait(waits, limit)
    for wait in done:
        wait.result()
    if running:
        logger.warning(
            "%d event loop(s) still draining a batched processor after shutdown's timeout of "
            "%s s; their callers wait for the batch function to return",
            len(running),
            timeout,
        )
    return not running


_live_loops: weakref.WeakSet[Loops] = weakref.WeakSet()


def _restart_all_after_fork() -> None:
    for loops in list(_live_loops):
        loops.restart_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_all_after_fork)


def backend_for(
    func: Callable[..., Any], resolve: Resolver, options: _core.Options, plan: Plan
) -> Loops | Workers:
    """Queues on the callers' event loops for an ``async def`` function; for a plain one,
    ``max_concurrent_batches`` worker threads."""
    name = getattr(func, "__qualname__", "batch function")
    if inspect.iscoroutinefunction(func):
        return Loops(name, resolve, options, plan)
    return Workers(name, resolve, options, plan=plan, count=options.max_concurrent_batches)


class AsyncBatchProcessor(AsyncManaged, Generic[T, U]):
    """Collects single-item awaits from many tasks into batched calls of ``func``.

    ``func`` takes a list of items and returns (or, if ``async``, resolves to) one result per
    item. ``max_concurrent_batches`` lets that many batches run at once (default 1). The other
    options are those of :func:`batched.dynamically`; for an ``async def`` function,
    ``max_queue_size`` bounds each event loop's queue.
    """

    def __init__(
        self,
        func: Callable[[list[T]], Results[U]],
        *,
        _resolve: Resolver | None = None,
        _options: _core.Options | None = None,
        **options: Unpack[AsyncBatchOptions],
    ) -> None:
        check_callable(func)
        checked_options = _options if _options is not None else checked(options, AsyncBatchOptions)
        functools.update_wrapper(self, func)
        resolve: Resolver = _resolve if _resolve is not None else (lambda: func)
        self._backend = backend_for(func, resolve, checked_options, ITEMS)

    if TYPE_CHECKING:

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
    else:
        __call__ = await_item


class AsyncBatchMethod(Protocol[S_contra, T, U]):
    """How type checkers see a decorated method: on an instance, that instance's processor."""

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self, instance: S_contra, owner: type[Any] | None = None
    ) -> AsyncBatchProcessor[T, U]: ...


class AsyncDecorator(Protocol):
    """What ``batched.aio.dynamically(...)`` with options returns."""

    @overload
    def __call__(self, func: Callable[[list[T]], Results[U]], /) -> AsyncBatchProcessor[T, U]: ...
    @overload
    def __call__(self, func: Callable[[list[T]], Any], /) -> AsyncBatchProcessor[T, Any]: ...
    @overload
    def __call__(
        self, func: Callable[[S, list[T]], Results[U]], /
    ) -> AsyncBatchMethod[S, T, U]: ...
    @overload
    def __call__(self, func: Callable[[S, list[T]], Any], /) -> AsyncBatchMethod[S, T, Any]: ...


@overload
def dynamically(func: Callable[[list[T]], Results[U]], /) -> AsyncBatchProcessor[T, U]: ...
@overload
def dynamically(func: Callable[[list[T]], Any], /) -> AsyncBatchProcessor[T, Any]: ...
@overload
def dynamically(func: Callable[[S, list[T]], Results[U]], /) -> AsyncBatchMethod[S, T, U]: ...
@overload
def dynamically(func: Callable[[S, list[T]], Any], /) -> AsyncBatchMethod[S, T, Any]: ...
@overload
def dynamically(func: None = None, /, **options: Unpack[AsyncBatchOptions]) -> AsyncDecorator: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates a batch function (``def`` or ``async def``) so that ``await f(item)`` batches.

    Use it bare or with options, on functions or methods (one processor per instance). The
    options are those of :func:`batched.dynamically` plus ``max_concurrent_batches``.
    """
    checked_options = checked(options, AsyncBatchOptions)
    return apply_or_defer(AsyncBatchProcessor, func, {"_options": checked_options})
