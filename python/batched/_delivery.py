"""The asyncio side of a call: awaiting its future, withdrawing it, waiting for room.

Calls' outcomes are set on their futures by the Rust core itself (on the loop's thread, or with
one ``call_soon_threadsafe`` per loop per batch); :func:`deliver` resolves the futures of tasks
waiting for room in a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from batched import _core


def _settle(
    futures: list[asyncio.Future[Any]],
    values: list[Any],
    failed_futures: list[asyncio.Future[Any]],
    errors: list[BaseException],
) -> None:
    # A future is already done when its task was cancelled meanwhile: skip it quietly.
    for future, value in zip(futures, values, strict=True):
        if not future.done():
            future.set_result(value)
    for future, error in zip(failed_futures, errors, strict=True):
        if not future.done():
            future.set_exception(error)


def deliver(
    loop: asyncio.AbstractEventLoop,
    futures: list[asyncio.Future[Any]],
    values: list[Any],
    failed_futures: list[asyncio.Future[Any]],
    errors: list[BaseException],
) -> None:
    """Resolves ``futures`` on ``loop``: at once on its own thread, else with one wake-up."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # a worker thread: no loop runs here
        running = None
    if running is loop:
        _settle(futures, values, failed_futures, errors)
        return
    # A closed loop raises RuntimeError: its tasks are gone and nobody awaits these futures.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, futures, values, failed_futures, errors)


def check_timeout(timeout: object) -> None:
    """Refuses a ``timeout=`` that is not a number of seconds (or None) before anything is
    queued."""
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")


def seconds_left(timeout: float) -> float:
    """A timeout as a wait: NaN or a negative one leaves no time at all, as in the core."""
    return timeout if timeout > 0 else 0.0


async def outcome(
    future: asyncio.Future[Any],
    ticket: _core.Ticket,
    timeout: float | None,
    stated_timeout: float | None = None,
) -> Any:
    """Awaits a submitted call's future; a caller that gives up (cancelled, or past `timeout`
    seconds, raising ``TimeoutError``) withdraws the call through its ``ticket``. The error
    names `stated_timeout`, the caller's own figure, when `timeout` is what was left of it.

    A ``TimeoutError`` raised by the batch function itself reaches the caller unchanged.
    """
    try:
        if timeout is None:  # the common case: no timer, no context manager
            return await future
        # NaN would never be reached by a timer (and would break the loop's timer heap).
        limit = asyncio.timeout(seconds_left(timeout))
        async with limit:
            return await future
    except TimeoutError:
        if timeout is None or not limit.expired():
            raise
        ticket.cancel(timed_out=True)
        stated = timeout if stated_timeout is None else stated_timeout
        raise TimeoutError(f"the call did not complete within its timeout of {stated} s") from None
    except BaseException:
        ticket.cancel()
        raise


class RoomQueue(Protocol):
    """What a bounded queue offers a task that found it full (see ``on_full="block"``)."""

    def wait_for_room(
        self, count: int, event_loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> bool: ...

    def record_timed_out(self, items: int) -> None: ...


def submit_call(
    queue: RoomQueue,
    count: int,
    submit: Callable[[asyncio.Future[Any]], _core.Ticket | None],
    timeout: float | None,
    block_when_full: bool,
) -> Awaitable[Any]:
    """Submits a call of ``count`` items with ``submit(future)`` now, and returns what to await
    for its outcome; with ``block_when_full``, a full queue makes that wait for room instead of
    raising. (A plain function, so that a call costs no extra coroutine on the loop.)"""
    future = asyncio.get_running_loop().create_future()
    try:
        ticket = submit(future)
    except _core.QueueFullError:
        if not block_when_full:
            raise
        return submit_when_room(queue, count, submit, timeout)
    if ticket is None:
        future.set_result([])
        return future
    return outcome(future, ticket, timeout)


async def submit_when_room(
    queue: RoomQueue,
    count: int,
    submit: Callable[[asyncio.Future[Any]], _core.Ticket | None],
    timeout: float | None,
) -> Any:
    """Submits a call of ``count`` items with ``submit(future)`` as soon as the queue has room,
    waiting without blocking the loop; the wait counts toward ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + seconds_left(timeout)
    while True:
        room: asyncio.Future[None] = loop.create_future()
        if queue.wait_for_room(count, loop, room):
            try:
                async with asyncio.timeout_at(deadline):
                    await room
            except TimeoutError:
                queue.record_timed_out(count)
                raise TimeoutError(
                    f"the queue had no room for this call within its timeout of {timeout} s"
                ) from None
        future = loop.create_future()
        try:
            ticket = submit(future)
        except _core.QueueFullError:
            continue  # another call took the room first
        if ticket is None:
            return []
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        return await outcome(future, ticket, left, stated_timeout=timeout)


def item_count(item: Any, rows: int | None) -> int:
    """How many items a call holds, as the core counts them."""
    if rows is not None:
        return rows
    return len(item) if isinstance(item, list) else 1
