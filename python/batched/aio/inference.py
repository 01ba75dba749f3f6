"""``batched.aio.inference.dynamically``: inference batching for asyncio callers.

The same features, padding and output slicing as :mod:`batched.inference`, on the asyncio
flavour: an ``async def`` function runs on the caller's loop, a plain ``def`` off it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Unpack, overload

from batched import _core
from batched._backend import AsyncManaged
from batched._decorate import apply_or_defer, check_callable
from batched._features import merge_parts
from batched._inference_options import AsyncInferenceOptions, call_features, plan_from
from batched._options import checked
from batched._plan import Resolver
from batched.aio._processor import backend_for

__all__ = ["AsyncInferenceProcessor", "dynamically"]


class AsyncInferenceProcessor(AsyncManaged):
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
        parts = await self._backend.acall(call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)


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
