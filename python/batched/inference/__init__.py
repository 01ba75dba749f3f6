"""Batching for model inference on numpy arrays and torch tensors, with padding.

The decorated function takes a dict of batched features and returns an array or tensor with
one row per item (or a list, tuple or dict of such). Each call passes features with one or
more rows; rows of different lengths are padded along their first axis, on the tensors' own
device, and each caller gets back its own rows as views of the batched output.
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
    BatchProcessor,
)
from batched._stats import BatchStats

__all__ = ["InferenceProcessor", "dynamically"]


class InferenceProcessor:
    """Batches single calls of an inference function from many threads.

    Call it as ``f({"input_ids": ids, ...})`` or ``f(input_ids=ids, ...)``; await it with
    ``f.acall(...)``. ``timeout=`` and ``priority=`` are keyword-only, as in the general API.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
        small_batch_threshold: int = DEFAULT_SMALL_BATCH_THRESHOLD,
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
        self._processor: BatchProcessor[Any, Any] = BatchProcessor(
            func,
            batch_size=batch_size,
            timeout_ms=timeout_ms,
            small_batch_threshold=small_batch_threshold,
            sort_by_length=sort_by_length,
            max_batch_tokens=max_batch_tokens,
            _resolve=_resolve,
            _plan=self._plan,
        )

    def __call__(
        self,
        features: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        priority: int = 0,
        **keywords: Any,
    ) -> Any:
        """Runs the call's rows through the batched function and returns its output rows."""
        call, lengths = call_features(self._schema, features, keywords)
        parts = self._processor._core.call(call, priority, timeout, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    async def acall(
        self,
        features: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        priority: int = 0,
        **keywords: Any,
    ) -> Any:
        """Like calling the processor, but awaits the result without blocking the event loop."""
        call, lengths = call_features(self._schema, features, keywords)
        parts = await self._processor.acall_rows(call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of this processor's statistics, ``padded_fraction`` included."""
        return self._processor.stats

    def shutdown(self, drain: bool = True) -> None:
        """Stops the processor; see :meth:`batched.BatchProcessor.shutdown`."""
        self._processor.shutdown(drain)

    def __enter__(self) -> InferenceProcessor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


@overload
def dynamically(func: Callable[..., Any], /) -> InferenceProcessor: ...
@overload
def dynamically(
    func: None = None,
    /,
    *,
    batch_size: int = ...,
    timeout_ms: float = ...,
    small_batch_threshold: int = ...,
    pad_tokens: Mapping[str, Any] | None = ...,
    pad_token: Mapping[str, Any] | None = ...,
    padding_side: str = ...,
    spread_kwargs: bool = ...,
    device: Any = ...,
    sort_by_length: bool = ...,
    max_batch_tokens: int | None = ...,
) -> Callable[[Callable[..., Any]], InferenceProcessor]: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates an inference function taking a dict of batched features.

    ``pad_tokens`` (or ``pad_token``) maps feature names to pad values (0 otherwise);
    ``padding_side`` is "right" or "left"; ``spread_kwargs`` calls ``func(**features)``;
    ``device`` moves CPU tensors there, one transfer per feature per batch;
    ``sort_by_length`` and ``max_batch_tokens`` batch rows of similar length within a budget of
    padded positions.
    """
    check_plan_options(options)

    return apply_or_defer(InferenceProcessor, func, options)
