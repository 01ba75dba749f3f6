"""The thread flavour: ``batched.dynamically`` and :class:`BatchProcessor`."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, Unpack, overload

from batched import _core
from batched._backend import Managed, await_item
from batched._decorate import apply_or_defer, check_callable
from batched._delivery import deliver, seconds_left
from batched._log import logger
from batched._options import BatchOptions, checked, reconfigured
from batched._plan import ITEMS, Plan, Resolver, item_lengths, run_batch

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)

BatchFunction = Callable[[list[T]], Sequence[U]]

# How long an interpreter exit (or a collected processor) waits for a running batch to finish.
_FINALIZE_JOIN_SECONDS = 5.0


def _serve(core: _core.Processor, resolve: Resolver, plan: Plan, isolate: bool) -> None:
    try:
        while (batch := core.next_batch()) is not None:
            if not run_batch(batch, resolve, plan, isolate):
                break
            del batch
    finally:
        # Whatever stopped the loop, nobody may be left waiting.
        core.close(False)
        core.fail_remaining()


def _stop(
    core: _core.Processor,
    workers: tuple[threading.Thread, ...],
    drain: bool,
    timeout: float | None,
    name: str,
) -> bool:
    """Closes ``core`` and joins its workers for at most ``timeout`` seconds (None: as long as
    they run). Returns False, and logs a warning, when a worker was still running a batch."""
    core.close(drain)
    if not drain:
        # Queued callers need not wait for a batch still running: release them now.
        core.fail_remaining()
    deadline = None if timeout is None else time.monotonic() + seconds_left(timeout)
    current = threading.current_thread()
    for worker in workers:
        if worker is not current:  # a batch function that shuts its own processor down
            worker.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
    busy = sum(worker.is_alive() and worker is not current for worker in workers)
    if busy:
        logger.warning(
            "%s: %d worker(s) still running a batch after shutdown's timeout of %s s; its "
            "callers wait for the batch function to return%s",
            name,
            busy,
            timeout,
            ", and so do the queued items it drains" if drain else "",
        )
        return False
    core.fail_remaining()
    return True


class Workers:
    """The backend of a plain batch function: a queue in the core and worker threads that
    take batches from it, ``count`` batches at a time."""

    def __init__(
        self,
        name: str,
        resolve: Resolver,
        options: _core.Options,
        *,
        plan: Plan = ITEMS,
        count: int = 1,
        entry: _core.CallEntry | None = None,
    ) -> None:
        self._name = name
        self._resolve = resolve
        self._plan = plan
        self._count = count
        self.options = options
        self.length_of = options.length_fn
        # The callable face bound to the queue (the thread flavour's), told of every new queue.
        self._entry = None if entry is None else weakref.ref(entry)
        self._reconfiguring = threading.Lock()
        self._start()
        _live_workers.add(self)

    def _start(self) -> None:
        self.core = core = _core.Processor(self.options, deliver)
        # Called straight, with no frame of ours: a call blocks on the core, GIL released.
        self.call = core.call
        self.submit = core.submit
        self._bind()
        isolate = self.options.isolate
        self._threads = tuple(
            threading.Thread(
                target=_serve,
                args=(core, self._resolve, self._plan, isolate),
                name=f"batched:{self._name}",
                daemon=True,
            )
            for _ in range(self._count)
        )
        try:
            for thread in self._threads:
                thread.start()
        except Exception as error:  # out of threads, or a sandbox that forbids them
            core.close(False)  # the workers already started see it closed and end
            raise RuntimeError(
                f"batched could not start a worker thread for {self._name}: {error}. The process "
                "may have reached its thread limit (many processors, one per instance of a "
                "batched method, each hold one)"
            ) from error
        logger.debug("started %s with %r", self._name, self.options)
        # Runs on shutdown(), when this backend is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(
            self, _stop, core, self._threads, False, _FINALIZE_JOIN_SECONDS, self._name
        )

    def _bind(self) -> None:
        entry = None if self._entry is None else self._entry()
        if entry is not None:
            length_of = self.length_of
            lengths = None if length_of is None else functools.partial(item_lengths, length_of)
            entry._bind_core(self.core, lengths)

    def restart_after_fork(self) -> None:
        """In a forked child: the parent's worker threads do not exist here and its queue's
        locks may be held forever, so a running backend starts afresh (empty, new workers)."""
        if not self._finalizer.alive:
            return  # shut down before the fork: stays shut down
        self._finalizer.detach()
        logger.debug("restarting %s in forked child %d", self._name, os.getpid())
        self._start()

    def room(self, loop: asyncio.AbstractEventLoop) -> _core.Processor:
        return self.core

    def reconfigure(self, changes: Mapping[str, Any], runtime: frozenset[str]) -> None:
        if "max_concurrent_batches" in changes and "max_concurrent_batches" in runtime:
            raise TypeError(
                "max_concurrent_batches of a plain def batch function is its number of worker "
                "threads, fixed when it is decorated; reconfigure can change it only for an "
                "async def function"
            )
        with self._reconfiguring:
            options = reconfigured(self.options, changes, runtime)
            self.core.reconfigure(options)
            self.options = options
            length_of = options.length_fn
            if length_of is not self.length_of:  # a token budget given now needs lengths
                self.length_of = length_of
                self._bind()
        logger.debug("reconfigured %s: %r", self._name, options.settings)

    @property
    def closed(self) -> bool:
        return self.core.closed

    def stats(self) -> _core.BatchStats:
        return self.core.stats()

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        return self.core.histograms(time_bounds, size_bounds)

    def shutdown(self, drain: bool, timeout: float | None) -> bool:
        self._finalizer.detach()
        stopped = _stop(self.core, self._threads, drain, timeout, self._name)
        logger.debug("shut down %s (drain=%s)", self._name, drain)
        return stopped

    async def ashutdown(self, drain: bool) -> None:
        await asyncio.to_thread(self.shutdown, drain, None)


# Every backend alive, so that a forked child can restart them.
_live_workers: weakref.WeakSet[Workers] = weakref.WeakSet()


def _restart_all_after_fork() -> None:
    _core.reset_after_fork()
    for workers in list(_live_workers):
        workers.restart_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_all_after_fork)


class BatchProcessor(_core.CallEntry, Managed, Generic[T, U]):
    """Collects single-item calls from many threads into batched calls of ``func``.

    ``func`` takes a list of items and returns one result per item, in order (a list, a tuple or
    any sequence or array whose rows are the results). Calls block the calling thread with the
    GIL released; :meth:`acall` awaits instead. The options are described in the README.
    """

    _backend: Workers

    def __init__(
        self,
        func: BatchFunction[T, U],
        *,
        _resolve: Resolver | None = None,
        _options: _core.Options | None = None,
        **options: Unpack[BatchOptions],
    ) -> None:
        check_callable(func)
        checked_options = _options if _options is not None else checked(options, BatchOptions)
        functools.update_wrapper(self, func)
        self._backend = Workers(
            getattr(func, "__qualname__", "batch function"),
            _resolve if _resolve is not None else (lambda: func),
            checked_options,
            entry=self,
        )

    if TYPE_CHECKING:
        # At run time calls go to _core.CallEntry.__call__, in Rust, with no frame of ours.
        @overload
        def __call__(
            self, item: list[T], /, *, timeout: float | None = ..., priority: int = ...
        ) -> list[U]: ...
        @overload
        def __call__(
            self, item: T, /, *, timeout: float | None = ..., priority: int = ...
        ) -> U: ...
        def __call__(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any:
            """Processes one item (or a list of items) and returns its result (or their
            list)."""

        @overload
        async def acall(
            self, item: list[T], /, *, timeout: float | None = ..., priority: int = ...
        ) -> list[U]: ...
        @overload
        async def acall(
            self, item: T, /, *, timeout: float | None = ..., priority: int = ...
        ) -> U: ...
        async def acall(
            self, item: Any, /, *, timeout: float | None = None, priority: int = 0
        ) -> Any:
            """Like calling the processor, but awaits the result without blocking the event
            loop."""
    else:
        acall = await_item


class BatchMethod(Protocol[S_contra, T, U]):
    """How type checkers see a decorated method: on an instance, that instance's processor."""

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self, instance: S_contra, owner: type[Any] | None = None
    ) -> BatchProcessor[T, U]: ...


class Decorator(Protocol):
    """What ``batched.dynamically(...)`` with options returns."""

    @overload
    def __call__(self, func: BatchFunction[T, U], /) -> BatchProcessor[T, U]: ...
    @overload
    def __call__(self, func: Callable[[list[T]], Any], /) -> BatchProcessor[T, Any]: ...
    @overload
    def __call__(self, func: Callable[[S, list[T]], Sequence[U]], /) -> BatchMethod[S, T, U]: ...
    @overload
    def __call__(self, func: Callable[[S, list[T]], Any], /) -> BatchMethod[S, T, Any]: ...


# A function returning a sequence types its results; one returning an array (any other output
# with one row per item) gives results typed Any.
@overload
def dynamically(func: BatchFunction[T, U], /) -> BatchProcessor[T, U]: ...
@overload
def dynamically(func: Callable[[list[T]], Any], /) -> BatchProcessor[T, Any]: ...
@overload
def dynamically(func: Callable[[S, list[T]], Sequence[U]], /) -> BatchMethod[S, T, U]: ...
@overload
def dynamically(func: Callable[[S, list[T]], Any], /) -> BatchMethod[S, T, Any]: ...
@overload
def dynamically(func: None = None, /, **options: Unpack[BatchOptions]) -> Decorator: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates a function taking a list of items so that single calls are batched.

    Use it bare (``@batched.dynamically``) or with options
    (``@batched.dynamically(batch_size=64, timeout_ms=2.0)``). On a method, each instance gets
    its own processor. ``sort_by_length`` groups items of similar length and
    ``max_batch_tokens`` caps a batch's padded size (items times longest item); both measure
    items with ``length_fn`` (``len`` by default). ``max_queue_size`` bounds the queue:
    a call that does not fit raises :class:`QueueFullError`, or with ``on_full="block"`` waits
    for room. ``on_error="isolate"`` retries a failing batch in halves so that only the callers
    of the items it fails on get the exception.
    """
    # Checked now, at decoration time, even for methods whose processors come later.
    return apply_or_defer(BatchProcessor, func, {"_options": checked(options, BatchOptions)})
