"""Resolving asyncio futures from the thread that finished a batch.

The Rust core groups a batch's finished futures by event loop and calls :func:`deliver` once per
loop, which costs one ``call_soon_threadsafe`` per loop per batch rather than one per item.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import events as _events
from typing import Any


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
    if _events._get_running_loop() is loop:
        _settle(futures, values, failed_futures, errors)
        return
    # A closed loop raises RuntimeError: its tasks are gone and nobody awaits these futures.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, futures, values, failed_futures, errors)


async def outcome(future: asyncio.Future[Any], ticket: Any, timeout: float | None) -> Any:
    """Awaits a submitted call's future; a caller that gives up (cancelled, or past `timeout`
    seconds, raising ``TimeoutError``) withdraws the call through its ``ticket``."""
    try:
        if timeout is None:
            return await future
        async with asyncio.timeout(timeout):
            return await future
    except BaseException:
        ticket.cancel()
        raise
