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

from batched import _core
from batched._decorate import apply_or_defer, check_callable
from batched._features import merge_parts
from batched._inference import FeatureCalls, InferenceOptions, call_features, plan_from
from batched._options import checked
from batched._plan import Resolver
from batched._processor import Workers

__all__ = ["InferenceProcessor", "dynamically"]


class InferenceProcessor(FeatureCalls):
    """Batches single calls of an inference function from many threads.

    Call it as ``f({"input_ids": ids, ...})`` or ``f(input_ids=ids, ...)``; await it with
    ``f.acall(...)``. ``timeout=`` and ``priority=`` are keyword-only, as in the general API.
    """

    _backend: Workers

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        _resolve: Resolver | None = None,
        _options: _core.Options | None = None,
        **options: Unpack[InferenceOptions],
    ) -> None:
        check_callable(func)
        checked_options = _options if _options is not None else checked(options, InferenceOptions)
        self._schema, self._plan = plan_from(options)
        functools.update_wrapper(self, func)
        self._backend = Workers(
            getattr(func, "__qualname__", "inference function"),
            _resolve if _resolve is not None else (lambda: func),
            checked_options,
            plan=self._plan,
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
        _owner = self._take_pin()  # a method's instance lives until this call returns
        call, lengths = call_features(self._schema, features, keywords)
        parts = self._backend.call(call, priority, timeout, call.rows, lengths)
        return merge_parts(parts, self._plan.left)

    acall = FeatureCalls._await_features


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
    checked_options = checked(options, InferenceOptions)
    plan_from(options)  # fails now on bad padding options
    return apply_or_defer(InferenceProcessor, func, {**options, "_options": checked_options})
