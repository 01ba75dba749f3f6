"""What every processor does through its backend: statistics, live options, shutdown, and
``with`` blocks.

A backend runs the batches: worker threads for a plain function (``batched._processor``), or
one queue per event loop for an ``async def`` one (``batched.aio._processor``). The four kinds
of processor (thread, asyncio, and their inference forms) differ only in how they are called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol, Self, Unpack

from batched import _core
from batched._delivery import RoomQueue, check_timeout, item_count, submit_call
from batched._options import (
    ASYNC_RUNTIME_OPTIONS,
    RUNTIME_OPTIONS,
    AsyncRuntimeOptions,
    RuntimeOptions,
)
from batched._plan import item_lengths

LengthOf = Callable[[Any], int]


class Backend(Protocol):
    """Where a processor's calls go and its batches run."""

    # The options in force, and how items are measured (None when no option looks at
    # lengths).
    options: _core.Options
    length_of: LengthOf | None

    def submit(
        self,
        item: Any,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        priority: int,
        rows: int | None,
        lengths: list[int] | None,
    ) -> _core.Ticket | None:
        """Queues a call whose outcome goes to ``future``; raises ``QueueFullError`` when the
        queue has no room. None for an empty list."""
        ...

    def room(self, loop: asyncio.AbstractEventLoop) -> RoomQueue:
        """The queue a call from ``loop`` goes to, where ``on_full="block"`` waits for room."""
        ...

    @property
    def closed(self) -> bool: ...

    def stats(self) -> _core.BatchStats: ...

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]: ...

    def reconfigure(self, changes: Mapping[str, Any], runtime: frozenset[str]) -> None:
        """Applies ``changes`` (options among ``runtime``) from the next batch on."""
        ...

    def shutdown(self, drain: bool, timeout: float | None) -> bool: ...

    async def ashutdown(self, drain: bool) -> None: ...


class Managed(_core.Pinned):
    """The methods every processor shares, each handed to its backend."""

    _backend: Backend

    def reconfigure(self, **options: Unpack[RuntimeOptions]) -> None:
        """Changes ``batch_size``, ``timeout_ms`` (and ``max_timeout_ms``) or
        ``max_batch_tokens`` while the processor runs, from any thread; the next batch is
        formed under them.

        A bad value raises what it would raise at decoration time and changes nothing; other
        options raise ``TypeError``. :attr:`stats` shows the options in force.
        """
        self._backend.reconfigure(options, RUNTIME_OPTIONS)

    @property
    def stats(self) -> _core.BatchStats:
        """A snapshot of this processor's statistics (across all event loops for an
        ``async def`` function), with the options in force."""
        return self._backend.stats()

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        """The histograms behind :attr:`stats`, cumulated at the given ascending bounds (seconds
        for ``queue_wait_seconds`` and ``batch_time_seconds``, items for ``batch_size``): each a
        ``(cumulative_counts, sum, count)`` tuple, as metrics exporters want them."""
        return self._backend.histograms(time_bounds, size_bounds)

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._backend.closed

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stops the processor; later calls raise :class:`ProcessorClosedError`. Returns True
        once no batch of it runs or waits, False (and logs a warning) when ``timeout`` seconds
        passed first.

        With ``drain`` (the default) the items already queued still run; without it they fail
        with :class:`ProcessorClosedError` at once, even while a batch still runs. For an
        ``async def`` function, a loop's own thread cannot wait for that loop's drain: there,
        use ``await f.ashutdown()``.
        """
        check_timeout(timeout)
        return self._backend.shutdown(drain, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"<{type(self).__name__} {getattr(self, '__qualname__', '?')} ({state})>"


async def await_call(
    backend: Backend,
    item: Any,
    timeout: float | None,
    priority: int,
    rows: int | None,
    lengths: list[int] | None,
) -> Any:
    """Submits a call to ``backend`` and awaits its outcome: ``TimeoutError`` after ``timeout``
    seconds, and with ``on_full="block"`` a wait for room (within that timeout)."""
    check_timeout(timeout)
    loop = asyncio.get_running_loop()
    return await submit_call(
        backend.room(loop),
        item_count(item, rows),
        lambda future: backend.submit(item, loop, future, priority, rows, lengths),
        timeout,
        backend.options.block_when_full,
    )


async def await_item(
    processor: Managed, item: Any, /, *, timeout: float | None = None, priority: int = 0
) -> Any:
    """Awaits the result for one item (or the list of results for a list of items) without
    blocking the event loop."""
    # A call without a timeout is inlined here: each further coroutine or frame would cost
    # every item of every batch. A method's instance lives until we return.
    _owner = processor._take_pin()
    backend = processor._backend
    length_of = backend.length_of
    lengths = None if length_of is None else item_lengths(length_of, item)
    if timeout is not None:
        return await await_call(backend, item, timeout, priority, None, lengths)
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    try:
        ticket = backend.submit(item, loop, future, priority, None, lengths)
    except _core.QueueFullError:
        if not backend.options.block_when_full:
            raise
        return await await_call(backend, item, timeout, priority, None, lengths)
    if ticket is None:
        return []
    try:
        return await future
    except BaseException:
        ticket.cancel()  # cancelled: the call is withdrawn
        raise


class AsyncManaged(Managed):
    """For the asyncio flavours, also ``ashutdown``, ``async with`` and, for an ``async def``
    function, ``max_concurrent_batches`` at run time."""

    def reconfigure(self, **options: Unpack[AsyncRuntimeOptions]) -> None:
        """Changes ``batch_size``, ``timeout_ms`` (and ``max_timeout_ms``),
        ``max_batch_tokens`` or, for an ``async def`` function, ``max_concurrent_batches``
        while the processor runs, from any thread; the next batch is formed under them.

        A bad value raises what it would raise at decoration time and changes nothing; other
        options raise ``TypeError``, and so does ``max_concurrent_batches`` for a plain ``def``
        function, whose worker threads start when it is decorated. :attr:`stats` shows the
        options in force.
        """
        self._backend.reconfigure(options, ASYNC_RUNTIME_OPTIONS)

    async def ashutdown(self, drain: bool = True) -> None:
        """Like :meth:`shutdown`, awaited: returns once every queued item (with ``drain``) and
        every running batch has finished."""
        await self._backend.ashutdown(drain)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.ashutdown()
