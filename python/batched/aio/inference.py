"""``batched.aio.inference.dynamically``: inference batching for asyncio callers.

The same features, padding and output slicing as :mod:`batched.inference`, on the asyncio
flavour: an ``async def`` function runs on the caller's loop, a plain ``def`` off it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Unpack, overload

from batched._decorate import Pinning, apply_or_defer, check_callable
from batched._features import merge_parts
from batched._inference_options import AsyncInferenceOptions, call_features, plan_from
from batched._lifecycle import AsyncLifecycle
from batched._options import AsyncRuntimeOptions, Settings
from batched._plan import Resolver
from batched._stats import BatchStats
from batched.aio._processor import AsyncBatchProcessor

__all__ = ["AsyncInferenceProcessor", "dynamically"]


class AsyncInferenceProcessor(Pinning, AsyncLifecycle):
    """Batches awaited calls of an inference function: ``await f(features)`` or
    ``await f(**features)``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        _resolve: Resolver | None = None,
        _settings: Settings | None = None,
        **options: Unpack[AsyncInferenceOptions],
    ) -> None:
        check_callable(func)
        settings = (
            _settings if _settings is not None else Settings.of(options, AsyncInferenceOptions)
        )
        self._schema, self._plan = plan_from(options)
        self._processor: AsyncBatchProcessor[Any, Any] = AsyncBatchProcessor(
            func, _resolve=_resolve, _plan=self._plan, _settings=settings
        )
        functools.update_wrapper(self, func)

    async def __call__(
        self,
        features: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        priority: int = 0,
        **keywords: Any,
    ) -> Any:
        """Awaits the output rows for this call's features."""
        _owner = self._take_pin()  # a method's instance lives until this call returns
        call, lengths = call_features(self._schema, features, keywords)
        parts = await self._processor._submit(call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    def reconfigure(self, **options: Unpack[AsyncRuntimeOptions]) -> None:
        """Changes batching options while the processor runs; see
        :meth:`batched.aio.AsyncBatchProcessor.reconfigure`."""
        self._processor.reconfigure(**options)

    @property
    def stats(self) -> BatchStats:
        return self._processor.stats

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        """See :meth:`batched.BatchProcessor.histograms`."""
        return self._processor.histograms(time_bounds, size_bounds)

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stops the processor; see :meth:`batched.aio.AsyncBatchProcessor.shutdown`."""
        return self._processor.shutdown(drain, timeout)

    async def ashutdown(self, drain: bool = True) -> None:
        await self._processor.ashutdown(drain)

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` (or :meth:`ashutdown`) was called."""
        return self._processor.closed


@overload
def dynamically(func: Callable[..., Any], /) -> AsyncInferenceProcessor: ...
@overload
def dynamically(
    func: None = None, /, **options: Unpack[AsyncInferenceOptions]
) -> Callable[[Callable[..., Any]], AsyncInferenceProcessor]: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates a (plain or ``async``) inference function for asyncio callers; the options
    are those of :func:`batched.inference.dynamically` plus ``max_concurrent_batches``."""
    settings = Settings.of(options, AsyncInferenceOptions)
    plan_from(options)  # fails now on bad padding options

    return apply_or_defer(AsyncInferenceProcessor, func, {**options, "_settings": settings})
