"""The asyncio floor: the least a batcher on one event loop can do, for the benchmarks to
measure ``batched.aio`` against.

One list of waiting items per loop; the first item of a batch arms one ``loop.call_later``;
``batch_size`` waiting items flush at once; each call awaits its own ``loop.create_future()``,
resolved once the batch function returned. No priorities, bounds, cancellation or statistics.
A plain ``def`` runs through ``loop.run_in_executor`` on one thread, one batch at a time, as
``batched.aio`` runs it by default.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MinimalBatcher:
    def __init__(self, func: Callable[[list[Any]], Any], batch_size: int, timeout_ms: float):
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        self.executor = None if self.is_async else ThreadPoolExecutor(max_workers=1)
        self.batch_size = batch_size
        self.timeout = timeout_ms / 1000.0
        # Per loop: [items, futures, timer].
        self.waiting: dict[asyncio.AbstractEventLoop, list[Any]] = {}

    async def __call__(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        waiting = self.waiting.get(loop)
        if waiting is None:
            waiting = self.waiting[loop] = [[], [], None]
        future = loop.create_future()
        waiting[0].append(item)
        waiting[1].append(future)
        if len(waiting[0]) >= self.batch_size:
            self.flush(loop, waiting)
        elif waiting[2] is None:
            waiting[2] = loop.call_later(self.timeout, self.flush, loop, waiting)
        return await future

    def flush(self, loop: asyncio.AbstractEventLoop, waiting: list[Any]) -> None:
        if waiting[2] is not None:
            waiting[2].cancel()
        items, futures = waiting[0], waiting[1]
        waiting[:] = [[], [], None]
        loop.create_task(self.run(loop, items, futures))

    async def run(self, loop: asyncio.AbstractEventLoop, items: list[Any], futures: list[Any]):
        try:
            if self.is_async:
                results = await self.func(items)
            else:
                results = await loop.run_in_executor(self.executor, self.func, items)
        except Exception as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
