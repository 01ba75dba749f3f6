"""Which options each decorator takes. Their types, ranges and defaults are checked by the core
(``_core.Options``), once, when a decorator is applied."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

from batched import _core

OnFull = Literal["raise", "block"]
OnError = Literal["fail", "isolate"]


class QueueOptions(TypedDict, total=False):
    """Batching options shared by every flavour (see the README's option table)."""

    batch_size: int
    timeout_ms: float | Literal["auto"]
    max_timeout_ms: float
    small_batch_threshold: int
    sort_by_length: bool
    max_batch_tokens: int | None
    max_queue_size: int | None
    on_full: OnFull
    on_error: OnError


class BatchOptions(QueueOptions, total=False):
    """Options of the general flavours, whose items are measured by ``length_fn``."""

    length_fn: Callable[[Any], int] | None


class AsyncBatchOptions(BatchOptions, total=False):
    max_concurrent_batches: int


class RuntimeOptions(TypedDict, total=False):
    """The options ``reconfigure`` changes while a processor runs."""

    batch_size: int
    timeout_ms: float | Literal["auto"]
    max_timeout_ms: float
    max_batch_tokens: int | None


class AsyncRuntimeOptions(RuntimeOptions, total=False):
    """``reconfigure``'s options for an ``async def`` batch function."""

    max_concurrent_batches: int


def _names(schema: type) -> frozenset[str]:
    return schema.__required_keys__ | schema.__optional_keys__  # type: ignore[attr-defined,no-any-return]


# Every option the core checks; a flavour's other options (padding) are its own.
_CORE_OPTIONS = _names(AsyncBatchOptions)
RUNTIME_OPTIONS = _names(RuntimeOptions)
ASYNC_RUNTIME_OPTIONS = _names(AsyncRuntimeOptions)


def checked(options: Mapping[str, Any], schema: type) -> _core.Options:
    """The core's checked options from ``options``, which must be keys of the TypedDict
    ``schema``. Raises ``TypeError`` for an unknown option or a wrong type, ``ValueError`` for
    a value out of range."""
    known = _names(schema)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"unexpected option {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(sorted(known))}"
        )
    return _core.Options(**{name: options[name] for name in options if name in _CORE_OPTIONS})


def reconfigured(
    options: _core.Options, changes: Mapping[str, Any], runtime: frozenset[str]
) -> _core.Options:
    """``options`` with ``changes`` (options among ``runtime``) applied, checked as at
    decoration time: the same errors for the same bad values."""
    fixed = sorted(set(changes) - runtime)
    if fixed:
        raise TypeError(
            f"reconfigure cannot change {', '.join(map(repr, fixed))} while the processor "
            f"runs; it takes {', '.join(sorted(runtime))}"
        )
    return options.replace(**changes)
