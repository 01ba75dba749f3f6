"""The thread flavour: ``batched.dynamically`` and :class:`BatchProcessor`."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, Unpack, overload

from batched import _core
from batched._decorate import apply_or_defer, check_callable
from batched._delivery import check_timeout, deliver, item_count, submit_call
from batched._lifecycle import Lifecycle
from batched._log import logger
from batched._options import RUNTIME_OPTIONS, BatchOptions, RuntimeOptions, Settings
from batched._plan import ITEMS, Plan, Resolver, item_lengths, run_batch
from batched._stats import BatchStats

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)

BatchFunction = Callable[[list[T]], Sequence[U]]

# How long an interpreter exit (or a collected processor) waits for a running batch to finish.
_FINALIZE_JOIN_SECONDS = 5.0

# Every processor alive, so that a forked child can restart them.
_live_processors: weakref.WeakSet[BatchProcessor[Any, Any]] = weakref.WeakSet()


def _restart_all_after_fork() -> None:
    _core.reset_after_fork()
    for processor in list(_live_processors):
        processor._restart_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_all_after_fork)


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
    deadline = None if timeout is None else time.monotonic() + (timeout if timeout > 0 else 0)
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


class BatchProcessor(_core.CallEntry, Lifecycle, Generic[T, U]):
    """Collects single-item calls from many threads into batched calls of ``func``.

    ``func`` takes a list of items and returns one result per item, in order (a list, a tuple or
    any sequence or array whose rows are the results). Calls block the calling thread with the
    GIL released; :meth:`acall` awaits instead. The options are described in the README.
    """

    def __init__(
        self,
        func: BatchFunction[T, U],
        *,
        _resolve: Resolver | None = None,
        _workers: int = 1,
        _plan: Plan = ITEMS,
        _settings: Settings | None = None,
        **options: Unpack[BatchOptions],
    ) -> None:
        check_callable(func)
        settings = _settings if _settings is not None else Settings.of(options, BatchOptions)
        self._settings = settings
        self._reconfiguring = threading.Lock()
        self._block_when_full = settings.on_full == "block"
        # Item lengths are computed only when some option looks at them.
        self._length_of = settings.length_of()
        functools.update_wrapper(self, func)
        self._resolve = _resolve if _resolve is not None else (lambda: func)
        self._worker_count = _workers
        self._plan = _plan
        self._start()
        _live_processors.add(self)

    def _start(self) -> None:
        self._core = _core.Processor(self._settings.queue, deliver)
        self._bind_lengths()
        name = getattr(self, "__qualname__", "batch function")
        isolate = self._settings.on_error == "isolate"
        self._workers = tuple(
            threading.Thread(
                target=_serve,
                args=(self._core, self._resolve, self._plan, isolate),
                name=f"batched:{name}",
                daemon=True,
            )
            for _ in range(self._worker_count)
        )
        try:
            for worker in self._workers:
                worker.start()
        except Exception as error:  # out of threads, or a sandbox that forbids them
            self._core.close(False)  # the workers already started see it closed and end
            raise RuntimeError(
                f"batched could not start a worker thread for {name}: {error}. The process may "
                "have reached its thread limit (many processors, one per instance of a batched "
                "method, each hold one)"
            ) from error
        logger.debug("started %s with %s", name, self._settings)
        # Runs on shutdown(), when this processor is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(
            self, _stop, self._core, self._workers, False, _FINALIZE_JOIN_SECONDS, name
        )

    def _bind_lengths(self) -> None:
        length_of = self._length_of
        self._bind_core(
            self._core,
            None if length_of is None else functools.partial(item_lengths, length_of),
        )

    def reconfigure(self, **options: Unpack[RuntimeOptions]) -> None:
        """Changes ``batch_size``, ``timeout_ms`` (``max_timeout_ms``) or ``max_batch_tokens``
        while the processor runs, from any thread; the next batch is formed under them.

        A bad value raises what it would raise at decoration time and changes nothing; other
        options raise ``TypeError``. :attr:`stats` shows the options in force.
        """
        with self._reconfiguring:
            settings = self._settings.reconfigured(options, RUNTIME_OPTIONS)
            self._apply(settings)
        logger.debug("reconfigured %s: %s", self, settings.live)

    def _apply(self, settings: Settings) -> None:
        """Hands checked settings to the queue; with the lock held."""
        self._core.reconfigure(settings.queue)
        self._settings = settings
        length_of = settings.length_of()
        if length_of is not self._length_of:  # a token budget given now needs lengths
            self._length_of = length_of
            self._bind_lengths()

    def _restart_after_fork(self) -> None:
        """In a forked child: the parent's worker threads do not exist here and its queue's
        locks may be held forever, so a running processor starts afresh (empty, new workers)."""
        if not self._finalizer.alive:
            return  # shut down before the fork: stays shut down
        self._finalizer.detach()
        logger.debug("restarting %s in forked child %d", self, os.getpid())
        self._start()

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
    async def acall(self, item: T, /, *, timeout: float | None = ..., priority: int = ...) -> U: ...
    async def acall(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any:
        """Like calling the processor, but awaits the result without blocking the event loop."""
        # A call without a timeout is inlined, as in batched.aio's __call__.
        _owner = self._take_pin()  # a method's instance lives until this call returns
        length_of = self._length_of
        lengths = None if length_of is None else item_lengths(length_of, item)
        if timeout is not None:
            return await self._acall_rows(item, timeout, priority, None, lengths)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            ticket = self._core.submit(item, loop, future, priority, None, lengths)
        except _core.QueueFullError:
            if not self._block_when_full:
                raise
            return await self._acall_rows(item, timeout, priority, None, lengths)
        if ticket is None:
            return []
        try:
            return await future
        except BaseException:
            ticket.cancel()  # cancelled: the call is withdrawn
            raise

    async def _acall_rows(
        self,
        item: Any,
        timeout: float | None,
        priority: int,
        rows: int | None,
        lengths: list[int] | None,
    ) -> Any:
        """``acall`` with the core's options: a row payload and per-item lengths. The public
        entry point that called it holds the pinned instance."""
        check_timeout(timeout)
        loop = asyncio.get_running_loop()
        core = self._core
        return await submit_call(
            core,
            item_count(item, rows),
            lambda future: core.submit(item, loop, future, priority, rows, lengths),
            timeout,
            self._block_when_full,
        )

    @property
    def stats(self) -> BatchStats:
        """A snapshot of this processor's statistics."""
        return BatchStats(**self._core.stats(), settings=self._settings.live)

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        """The histograms behind :attr:`stats`, cumulated at the given ascending bounds (seconds
        for ``queue_wait_seconds`` and ``batch_time_seconds``, items for ``batch_size``): each a
        ``(cumulative_counts, sum, count)`` tuple, as metrics exporters want them."""
        return self._core.histograms(time_bounds, size_bounds)

    @property
    def closed(self) -> bool:
        return self._core.closed

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stops the processor and returns once its worker has stopped, or after ``timeout``
        seconds. Returns True when the worker stopped, False (and logs a warning) when it was
        still running a batch.

        With ``drain`` (the default) the items already queued still run; without it they fail
        with :class:`ProcessorClosedError` at once, even while a batch still runs. Later calls
        raise :class:`ProcessorClosedError`.
        """
        check_timeout(timeout)
        self._finalizer.detach()
        stopped = _stop(
            self._core, self._workers, drain, timeout, getattr(self, "__qualname__", "?")
        )
        logger.debug("shut down %s (drain=%s)", self, drain)
        return stopped


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
    settings = Settings.of(options, BatchOptions)

    return apply_or_defer(BatchProcessor, func, {"_settings": settings})
