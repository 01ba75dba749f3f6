"""``batched.aio.inference.dynamically``: inference batching for asyncio callers.

The same features, padding and output slicing as :mod:`batched.inference`, on the asyncio
flavour: an ``async def`` function runs on the caller's loop, a plain ``def`` off it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Unpack, overload

from batched import _core
from batched._backend import AsyncManaged
from batched._decorate import apply_or_defer, check_callable
from batched._inference import AsyncInferenceOptions, FeatureCalls, plan_from
from batched._options import checked
from batched._plan import Resolver
from batched.aio._processor import backend_for

__all__ = ["AsyncInferenceProcessor", "dynamically"]


class AsyncInferenceProcessor(FeatureCalls, AsyncManaged):
    """Batches awaited calls of an inference function: ``await f(features)`` or
    ``await f(**features)``."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        _resolve: Resolver | None = None,
        _options: _core.Options | None = None,
        **options: Unpack[AsyncInferenceOptions],
    ) -> None:
        check_callable(func)
        checked_options = (
            _options if _options is not None else checked(options, AsyncInferenceOptions)
        )
        self._schema, self._plan = plan_from(options)
        functools.update_wrapper(self, func)
        resolve: Resolver = _resolve if _resolve is not None else (lambda: func)
        self._backend = backend_for(func, resolve, checked_options, self._plan)

    __call__ = FeatureCalls._await_features


@overload
def dynamically(func: Callable[..., Any], /) -> AsyncInferenceProcessor: ...
@overload
def dynamically(
    func: None = None, /, **options: Unpack[AsyncInferenceOptions]
) -> Callable[[Callable[..., Any]], AsyncInferenceProcessor]: ...
def dynamically(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Decorates a (plain or ``async``) inference function for asyncio callers; the options
    are those of :func:`batched.inference.dynamically` plus ``max_concurrent_batches``."""
    checked_options = checked(options, AsyncInferenceOptions)
    plan_from(options)  # fails now on bad padding options
    return apply_or_defer(AsyncInferenceProcessor, func, {**options, "_options": checked_options})
