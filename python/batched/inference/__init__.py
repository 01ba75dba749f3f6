"""Batching for model inference on numpy arrays and torch tensors, with padding.

The decorated function takes a dict of batched features and returns an array or tensor with
one row per item (or a list, tuple or dict of such). Each call passes features with one or
more rows; rows of different lengths are padded along their first axis, on the tensors' own
device, and each caller gets back its own rows as views of the batched output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Unpack, overload

from batched._decorate import Pinning, apply_or_defer, check_callable
from batched._features import merge_parts
from batched._inference_options import InferenceOptions, call_features, plan_from
from batched._lifecycle import Lifecycle
from batched._options import RuntimeOptions, Settings
from batched._plan import Resolver
from batched._processor import BatchProcessor
from batched._stats import BatchStats

__all__ = ["InferenceProcessor", "dynamically"]


class InferenceProcessor(Pinning, Lifecycle):
    """Batches single calls of an inference function from many threads.

    Call it as ``f({"input_ids": ids, ...})`` or ``f(input_ids=ids, ...)``; await it with
    ``f.acall(...)``. ``timeout=`` and ``priority=`` are keyword-only, as in the general API.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        _resolve: Resolver | None = None,
        _settings: Settings | None = None,
        **options: Unpack[InferenceOptions],
    ) -> None:
        check_callable(func)
        settings = _settings if _settings is not None else Settings.of(options, InferenceOptions)
        self._schema, self._plan = plan_from(options)
        self._processor: BatchProcessor[Any, Any] = BatchProcessor(
            func, _resolve=_resolve, _plan=self._plan, _settings=settings
        )
        functools.update_wrapper(self, func)

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
        _owner = self._take_pin()  # a method's instance lives until this call returns
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
        _owner = self._take_pin()  # a method's instance lives until this call returns
        call, lengths = call_features(self._schema, features, keywords)
        parts = await self._processor._acall_rows(call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    def reconfigure(self, **options: Unpack[RuntimeOptions]) -> None:
        """Changes batching options while the processor runs; see
        :meth:`BatchProcessor.reconfigure`."""
        self._processor.reconfigure(**options)

    @property
    def stats(self) -> BatchStats:
        """A snapshot of this processor's statistics, ``padded_fraction`` included."""
        return self._processor.stats

    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> dict[str, Any]:
        """See :meth:`batched.BatchProcessor.histograms`."""
        return self._processor.histograms(time_bounds, size_bounds)

    def shutdown(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stops the processor; see :meth:`batched.BatchProcessor.shutdown`."""
        return self._processor.shutdown(drain, timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` was called."""
        return self._processor.closed


@overload
def dynamically(func: Callable[..., Any], /) -> InferenceProcessor: ...
@overload
def dynamically(
    func: None = None, /, **options: Unpack[InferenceOptions]
) -> Callable[[Callable[..., Any]], InferenceProcessor]: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates an inference function taking a dict of batched features.

    ``pad_tokens`` (or ``pad_token``) maps feature names to pad values (0 otherwise);
    ``padding_side`` is "right" or "left"; ``spread_kwargs`` calls ``func(**features)``;
    ``device`` moves CPU tensors there, one transfer per feature per batch;
    ``sort_by_length`` and ``max_batch_tokens`` batch rows of similar length within a budget of
    padded positions. The queue options are those of :func:`batched.dynamically`.
    """
    settings = Settings.of(options, InferenceOptions)
    plan_from(options)  # fails now on bad padding options

    return apply_or_defer(InferenceProcessor, func, {**options, "_settings": settings})
