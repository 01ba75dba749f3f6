"""Turning a decorated function into a processor: one per function, or one per instance for
methods, without the processor keeping its instance alive."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

P = TypeVar("P")


def check_callable(func: object) -> None:
    if not callable(func):
        raise TypeError(f"batched needs a callable taking a list of items, got {func!r}")


def is_method(func: Callable[..., Any]) -> bool:
    """True for a function defined directly in a class body (``Class.name`` qualname); a method
    already bound to its instance is an ordinary callable."""
    if inspect.ismethod(func):
        return False
    parts = getattr(func, "__qualname__", "").split(".")
    return len(parts) >= 2 and parts[-2] != "<locals>"


def weak_bound(
    func: Callable[..., Any], instance: object
) -> Callable[[], Callable[..., Any] | None]:
    """A resolver giving ``func`` bound to ``instance`` while the instance lives, then ``None``."""
    ref = weakref.ref(instance)

    def resolve() -> Callable[..., Any] | None:
        target = ref()
        return None if target is None else functools.partial(func, target)

    return resolve


class PerInstance(Generic[P]):
    """Descriptor holding one processor per instance, stored in the instance's ``__dict__``.

    The processor's worker sees the instance only through a weak reference, so collecting the
    instance collects the processor too, and its finalizer stops the worker.
    """

    def __init__(self, func: Callable[..., Any], make: Callable[[Callable[[], Any]], P]) -> None:
        self._func = func
        self._make = make
        self._slot = f"__batched_{func.__name__}"
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"__batched_{name}"

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        try:
            namespace = instance.__dict__
        except AttributeError:
            raise TypeError(
                f"batched methods need instances with a __dict__; {type(instance).__name__} "
                "uses __slots__ without one. Add '__dict__' to its __slots__."
            ) from None
        processor = namespace.get(self._slot)
        if processor is None:
            processor = namespace.setdefault(
                self._slot, self._make(weak_bound(self._func, instance))
            )
        return processor


def apply_or_defer(
    make: Callable[..., Any], func: Callable[..., Any] | None, options: dict[str, Any]
) -> Any:
    """What a ``dynamically`` decorator returns: the processor ``make(func, **options)`` (one
    per instance for a method) when used bare, else a decorator that builds it."""

    def decorate(target: Callable[..., Any]) -> Any:
        check_callable(target)
        if is_method(target):
            return PerInstance(target, lambda resolve: make(target, _resolve=resolve, **options))
        return make(target, **options)

    return decorate if func is None else decorate(func)
