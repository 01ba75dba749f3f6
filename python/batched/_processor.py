"""The thread flavour: ``batched.dynamically`` and :class:`BatchProcessor`."""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from batched import _core
from batched._decorate import apply_or_defer, check_callable
from batched._delivery import deliver, outcome
from batched._plan import ITEMS, Plan, Resolver, item_lengths, run_batch
from batched._stats import BatchStats

T = TypeVar("T")
U = TypeVar("U")

BatchFunction = Callable[[list[T]], Sequence[U]]

DEFAULT_BATCH_SIZE = 32
DEFAULT_TIMEOUT_MS = 5.0
DEFAULT_SMALL_BATCH_THRESHOLD = 8

# How long an interpreter exit (or a collected processor) waits for a running batch to finish.
_FINALIZE_JOIN_SECONDS = 5.0


def _serve(core: _core.Processor, resolve: Resolver, plan: Plan) -> None:
    try:
        while (batch := core.next_batch()) is not None:
            if not run_batch(batch, resolve, plan):
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
    join: float | None,
) -> None:
    core.close(drain)
    for worker in workers:
        if worker is not threading.current_thread():
            worker.join(join)
    core.fail_remaining()


class BatchProcessor(Generic[T, U]):
    """Collects single-item calls from many threads into batched calls of ``func``.

    ``func`` takes a list of items and returns one result per item, in order (a list, a tuple or
    any sequence or array whose rows are the results). Calls block the calling thread with the
    GIL released; :meth:`acall` awaits instead.
    """

    def __init__(
        self,
        func: BatchFunction[T, U],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
        small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
        sort_by_length: bool = False,
        max_batch_tokens: int | None = None,
        length_fn: Callable[[T], int] | None = None,
        _resolve: Resolver | None = None,
        _workers: int = 1,
        _plan: Plan = ITEMS,
    ) -> None:
        check_callable(func)
        self._core = _core.Processor(
            check_int("batch_size", batch_size),
            check_number("timeout_ms", timeout_ms),
            check_int("small_batch_threshold", small_batch_threshold),
            deliver,
            check_optional_int("max_batch_tokens", max_batch_tokens),
            bool(sort_by_length),
        )
        # Item lengths are computed only when some option looks at them.
        self._length_of: Callable[[Any], int] | None = None
        if sort_by_length or max_batch_tokens is not None or length_fn is not None:
            self._length_of = length_fn if length_fn is not None else len
        functools.update_wrapper(self, func)
        resolve = _resolve if _resolve is not None else (lambda: func)
        name = getattr(func, "__qualname__", repr(func))
        self._workers = tuple(
            threading.Thread(
                target=_serve,
                args=(self._core, resolve, _plan),
                name=f"batched:{name}",
                daemon=True,
            )
            for _ in range(_workers)
        )
        for worker in self._workers:
            worker.start()
        # Runs on shutdown(), when this processor is collected, or at interpreter exit.
        self._finalizer = weakref.finalize(
            self, _stop, self._core, self._workers, False, _FINALIZE_JOIN_SECONDS
        )

    @overload
    def __call__(
        self, item: list[T], /, *, timeout: float | None = ..., priority: int = ...
    ) -> list[U]: ...
    @overload
    def __call__(self, item: T, /, *, timeout: float | None = ..., priority: int = ...) -> U: ...
    def __call__(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any:
        """Processes one item (or a list of items) and returns its result (or their list)."""
        if self._length_of is None:
            return self._core.call(item, priority, timeout)
        return self._core.call(item, priority, timeout, None, item_lengths(self._length_of, item))

    @overload
    async def acall(
        self, item: list[T], /, *, timeout: float | None = ..., priority: int = ...
    ) -> list[U]: ...
    @overload
    async def acall(self, item: T, /, *, timeout: float | None = ..., priority: int = ...) -> U: ...
    async def acall(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any:
        """Like calling the processor, but awaits the result without blocking the event loop."""
        lengths = item_lengths(self._length_of, item)
        return await self.acall_rows(item, timeout, priority, None, lengths)

    async def acall_rows(
        self,
        item: Any,
        timeout: float | None,
        priority: int,
        rows: int | None,
        lengths: list[int] | None,
    ) -> Any:
        """``acall`` with the core's options: a row payload and per-item lengths."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        ticket = self._core.submit(item, loop, future, priority, rows, lengths)
        if ticket is None:
            return []
        return await outcome(future, ticket, timeout)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of this processor's statistics."""
        return BatchStats(**self._core.stats())

    @property
    def closed(self) -> bool:
        return self._core.closed

    def shutdown(self, drain: bool = True) -> None:
        """Stops the processor and returns once its worker has stopped.

        With ``drain`` (the default) the items already queued still run; without it they fail
        with :class:`ProcessorClosedError`. Later calls raise :class:`ProcessorClosedError`.
        """
        self._finalizer.detach()
        _stop(self._core, self._workers, drain, None)

    def __enter__(self) -> BatchProcessor[T, U]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"<BatchProcessor {getattr(self, '__qualname__', '?')} ({state})>"


def check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return value


def check_optional_int(name: str, value: object) -> int | None:
    return None if value is None else check_int(name, value)


def check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    return float(value)


@overload
def dynamically(func: BatchFunction[T, U], /) -> BatchProcessor[T, U]: ...
@overload
def dynamically(
    func: None = None,
    /,
    *,
    batch_size: int = ...,
    timeout_ms: float = ...,
    small_batch_threshold: int = ...,
    sort_by_length: bool = ...,
    max_batch_tokens: int | None = ...,
    length_fn: Callable[[T], int] | None = ...,
) -> Callable[[BatchFunction[T, U]], BatchProcessor[T, U]]: ...
def dynamically(
    func: BatchFunction[T, U] | None = None,
    /,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout_ms: float = DEFAULT_TIMEOUT_MS,
    small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
    sort_by_length: bool = False,
    max_batch_tokens: int | None = None,
    length_fn: Callable[[T], int] | None = None,
) -> Any:
    """Decorates a function taking a list of items so that single calls are batched.

    Use it bare (``@batched.dynamically``) or with options
    (``@batched.dynamically(batch_size=64, timeout_ms=2.0)``). On a method, each instance gets
    its own processor. ``sort_by_length`` groups items of similar length and
    ``max_batch_tokens`` caps a batch's padded size (items times longest item); both measure
    items with ``length_fn`` (``len`` by default).
    """
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "timeout_ms": timeout_ms,
        "small_batch_threshold": small_batch_threshold,
        "sort_by_length": sort_by_length,
        "max_batch_tokens": max_batch_tokens,
        "length_fn": length_fn,
    }
    # Validate now, at decoration time, even for methods whose processors come later.
    _core.validate_policy(
        check_int("batch_size", batch_size),
        check_number("timeout_ms", timeout_ms),
        check_int("small_batch_threshold", small_batch_threshold),
        check_optional_int("max_batch_tokens", max_batch_tokens),
        bool(sort_by_length),
    )

    return apply_or_defer(BatchProcessor, func, options)
