"""Turning a decorated function into a processor: one per function, or one per instance for
methods, without the processor keeping its instance alive."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from batched._log import logger


class _Pinnable(Protocol):
    def _pin(self, owner: object) -> None: ...


P = TypeVar("P", bound=_Pinnable)


# More live processors than this, of one decorated method, make it warn (see the setter).
_processor_warning_threshold: int | None = 256


def set_processor_warning_threshold(count: int | None) -> None:
    """Sets how many live processors one batched method (one per instance) may have before the
    ``batched`` logger warns, once per method; ``None`` turns the warning off. The default is
    256: many instances each holding a processor (and, for a plain ``def``, a worker thread)
    often means an instance made per request by mistake."""
    global _processor_warning_threshold
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise TypeError(f"the threshold must be an int or None, got {count!r}")
    if count is not None and count < 1:
        raise ValueError(f"the threshold must be at least 1, got {count}")
    _processor_warning_threshold = count


def check_callable(func: object) -> None:
    if not callable(func):
        raise TypeError(f"batched needs a callable batch function, got {func!r}")


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


def _no_slot() -> None:
    """What a pickled :class:`_Slot` unpickles to: nothing, so the copy builds its own."""
    return None


class _Slot(Generic[P]):
    """A processor in its instance's ``__dict__``, with a weak reference to that instance: a
    copy of the instance (whose ``__dict__`` shares the slot) or an unpickled one then gets a
    processor of its own instead of calling the original's."""

    __slots__ = ("owner", "processor")

    def __init__(self, owner: object, processor: P) -> None:
        self.owner = weakref.ref(owner)
        self.processor = processor

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return _no_slot, ()


class PerInstance(Generic[P]):
    """Descriptor holding one processor per instance, stored in the instance's ``__dict__``.

    The processor's worker sees the instance only through a weak reference, so collecting the
    instance collects the processor too, and its finalizer stops the worker. The processor
    holds the instance from each fetch to the end of the call that follows (see
    ``_core.Pinned``).
    """

    def __init__(self, func: Callable[..., Any], make: Callable[[Callable[[], Any]], P]) -> None:
        self._func = func
        self._make = make
        self._slot = f"__batched_{func.__name__}"
        functools.update_wrapper(self, func)
        self._live: weakref.WeakSet[P] = weakref.WeakSet()
        self._warned = False

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"__batched_{name}"

    def __call__(self, *args: object, **kwargs: object) -> Any:
        # Reached through the class, or through staticmethod(...) applied after batched.
        raise TypeError(
            f"{self._func.__qualname__} is batched per instance: call it on an instance. For "
            "a static batched function, put @staticmethod below the batched decorator."
        )

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        if isinstance(instance, type):  # reached through classmethod(...)
            raise TypeError(
                f"{self._func.__qualname__} is batched per instance and cannot be a classmethod"
            )
        try:
            namespace = instance.__dict__
        except AttributeError:
            raise TypeError(
                f"batched methods need instances with a __dict__; {type(instance).__name__} "
                "uses __slots__ without one. Add '__dict__' to its __slots__."
            ) from None
        slot: _Slot[P] | None = namespace.get(self._slot)
        if slot is None or slot.owner() is not instance:
            fresh = _Slot(instance, self._make(weak_bound(self._func, instance)))
            current = namespace.get(self._slot)
            # Another thread may have put one in meanwhile: then everyone uses that one.
            slot = current if current is not None and current is not slot else fresh
            namespace[self._slot] = slot
            if slot is fresh:
                self._count(fresh.processor)
        processor = slot.processor
        processor._pin(instance)
        return processor

    def _count(self, processor: P) -> None:
        """Counts a new instance's processor; warns once when there are many alive."""
        self._live.add(processor)
        threshold = _processor_warning_threshold
        if self._warned or threshold is None or len(self._live) <= threshold:
            return
        self._warned = True
        logger.warning(
            "%s: %d instances hold live batched processors of this method. Each instance gets "
            "its own processor, with its own queue and worker, so items of different instances "
            "are never batched together. Share one instance (not one per request), or batch a "
            "function instead of a method. batched.set_processor_warning_threshold() changes "
            "when this warning appears.",
            self._func.__qualname__,
            len(self._live),
        )


def apply_or_defer(
    make: Callable[..., Any], func: Callable[..., Any] | None, options: dict[str, Any]
) -> Any:
    """What a ``dynamically`` decorator returns: the processor ``make(func, **options)`` (one
    per instance for a method) when used bare, else a decorator that builds it."""

    def decorate(target: Callable[..., Any]) -> Any:
        if isinstance(target, classmethod):
            raise TypeError(
                "batched cannot decorate a classmethod: batch a plain function, a static "
                "method or a method of instances"
            )
        if isinstance(target, staticmethod):
            target = target.__func__  # batched like a plain function: no instance to bind
            check_callable(target)
            return make(target, **options)
        check_callable(target)
        if is_method(target):
            return PerInstance(target, lambda resolve: make(target, _resolve=resolve, **options))
        return make(target, **options)

    return decorate if func is None else decorate(func)
