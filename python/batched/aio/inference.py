"""``batched.aio.inference.dynamically``: inference batching for asyncio callers.

The same features, padding and output slicing as :mod:`batched.inference`, on the asyncio
flavour: an ``async def`` function runs on the caller's loop, a plain ``def`` off it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from batched._decorate import apply_or_defer, check_callable
from batched._features import merge_parts
from batched._inference_options import call_features, check_plan_options, make_plan
from batched._plan import Resolver
from batched._processor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SMALL_BATCH_THRESHOLD,
    DEFAULT_TIMEOUT_MS,
)
from batched._stats import BatchStats
from batched.aio._processor import AsyncBatchProcessor

__all__ = ["AsyncInferenceProcessor", "dynamically"]


class AsyncInferenceProcessor:
    """Batches awaited calls of an inference function: ``await f(features)`` or
    ``await f(**features)``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
        small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
        max_concurrent_batches: int = 1,
        pad_tokens: Mapping[str, Any] | None = None,
        pad_token: Mapping[str, Any] | None = None,
        padding_side: str = "right",
        spread_kwargs: bool = False,
        device: Any = None,
        sort_by_length: bool = False,
        max_batch_tokens: int | None = None,
        _resolve: Resolver | None = None,
    ) -> None:
        check_callable(func)
        self._schema, self._plan = make_plan(
            pad_tokens, pad_token, padding_side, spread_kwargs, device
        )
        self._processor: AsyncBatchProcessor[Any, Any] = AsyncBatchProcessor(
            func,
            batch_size=batch_size,
            timeout_ms=timeout_ms,
            small_batch_threshold=small_batch_threshold,
            max_concurrent_batches=max_concurrent_batches,
            sort_by_length=sort_by_length,
            max_batch_tokens=max_batch_tokens,
            _resolve=_resolve,
            _plan=self._plan,
        )

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
        call, lengths = call_features(self._schema, features, keywords)
        parts = await self._processor._submit(call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    @property
    def stats(self) -> BatchStats:
        return self._processor.stats

    def shutdown(self, drain: bool = True) -> None:
        self._processor.shutdown(drain)


@overload
def dynamically(func: Callable[..., Any], /) -> AsyncInferenceProcessor: ...
@overload
def dynamically(
    func: None = None,
    /,
    *,
    batch_size: int = ...,
    timeout_ms: float = ...,
    small_batch_threshold: int = ...,
    max_concurrent_batches: int = ...,
    pad_tokens: Mapping[str, Any] | None = ...,
    pad_token: Mapping[str, Any] | None = ...,
    padding_side: str = ...,
    spread_kwargs: bool = ...,
    device: Any = ...,
    sort_by_length: bool = ...,
    max_batch_tokens: int | None = ...,
) -> Callable[[Callable[..., Any]], AsyncInferenceProcessor]: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates a (plain or ``async``) inference function for asyncio callers; the options
    are those of :func:`batched.inference.dynamically` plus ``max_concurrent_batches``."""
    check_plan_options(options)

    return apply_or_defer(AsyncInferenceProcessor, func, options)
