"""The options every decorator takes, checked once, with their defaults in one place."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

from batched import _core

DEFAULT_BATCH_SIZE = 32
DEFAULT_TIMEOUT_MS = 5.0
DEFAULT_SMALL_BATCH_THRESHOLD = 8
# The longest any item waits under timeout_ms="auto" unless max_timeout_ms says otherwise.
DEFAULT_MAX_TIMEOUT_MS = 10.0

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


RUNTIME_OPTIONS: frozenset[str] = RuntimeOptions.__optional_keys__
ASYNC_RUNTIME_OPTIONS: frozenset[str] = AsyncRuntimeOptions.__optional_keys__


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSettings:
    """The options :meth:`~batched.BatchProcessor.reconfigure` can change, as they stood when a
    statistics snapshot was taken. ``max_timeout_ms`` is None unless ``timeout_ms="auto"``."""

    batch_size: int = DEFAULT_BATCH_SIZE
    timeout_ms: float | Literal["auto"] = DEFAULT_TIMEOUT_MS
    max_timeout_ms: float | None = None
    max_batch_tokens: int | None = None
    max_concurrent_batches: int = 1


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return value


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _optional_int(name: str, value: object) -> int | None:
    return None if value is None else _int(name, value)


def _milliseconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    return float(value)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        choices = " or ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{name} must be {choices}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Checked options of one processor: what the Rust queues take, and what the Python layer
    itself looks at."""

    queue: _core.QueueOptions
    # The options as given, and which TypedDict checked them: reconfigure checks them again.
    given: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schema: type = QueueOptions
    live: BatchSettings = BatchSettings()
    sort_by_length: bool = False
    max_batch_tokens: int | None = None
    on_full: OnFull = "raise"
    on_error: OnError = "fail"
    length_fn: Callable[[Any], int] | None = None
    max_concurrent_batches: int = 1

    @classmethod
    def of(cls, options: Mapping[str, Any], allowed: type) -> Settings:
        """Checks ``options`` (the keys of the TypedDict ``allowed``) and fills in defaults.
        Raises ``TypeError`` for an unknown option or a wrong type, ``ValueError`` for a value
        out of range."""
        known: frozenset[str] = allowed.__required_keys__ | allowed.__optional_keys__  # type: ignore[attr-defined]
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unexpected option {', '.join(map(repr, unknown))}; "
                f"the options are {', '.join(sorted(known))}"
            )
        timeout_ms = options.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        adaptive = timeout_ms == "auto"
        if adaptive:
            timeout_ms = options.get("max_timeout_ms", DEFAULT_MAX_TIMEOUT_MS)
        elif "max_timeout_ms" in options:
            raise ValueError(
                'max_timeout_ms bounds timeout_ms="auto"; with a fixed timeout_ms, leave it out'
            )
        elif isinstance(timeout_ms, str):
            raise TypeError(
                f'timeout_ms must be a number of milliseconds or "auto", got {timeout_ms!r}'
            )
        batch_size = _int("batch_size", options.get("batch_size", DEFAULT_BATCH_SIZE))
        wait_ms = _milliseconds("max_timeout_ms" if adaptive else "timeout_ms", timeout_ms)
        sort_by_length = flag("sort_by_length", options.get("sort_by_length", False))
        max_batch_tokens = _optional_int("max_batch_tokens", options.get("max_batch_tokens"))
        on_full = _choice("on_full", options.get("on_full", "raise"), ("raise", "block"))
        queue = _core.QueueOptions(
            batch_size=batch_size,
            timeout_ms=wait_ms,
            small_batch_threshold=_int(
                "small_batch_threshold",
                options.get("small_batch_threshold", DEFAULT_SMALL_BATCH_THRESHOLD),
            ),
            max_batch_tokens=max_batch_tokens,
            sort_by_length=sort_by_length,
            max_queue_size=_optional_int("max_queue_size", options.get("max_queue_size")),
            on_full=on_full,
            adaptive=adaptive,
        )
        max_concurrent_batches = _int(
            "max_concurrent_batches", options.get("max_concurrent_batches", 1)
        )
        settings = cls(
            queue=queue,
            given=dict(options),
            schema=allowed,
            live=BatchSettings(
                batch_size=batch_size,
                timeout_ms="auto" if adaptive else wait_ms,
                max_timeout_ms=wait_ms if adaptive else None,
                max_batch_tokens=max_batch_tokens,
                max_concurrent_batches=max_concurrent_batches,
            ),
            sort_by_length=sort_by_length,
            max_batch_tokens=max_batch_tokens,
            on_full=on_full,
            on_error=_choice("on_error", options.get("on_error", "fail"), ("fail", "isolate")),
            length_fn=options.get("length_fn"),
            max_concurrent_batches=max_concurrent_batches,
        )
        if settings.length_fn is not None and not callable(settings.length_fn):
            raise TypeError(f"length_fn must be callable, got {settings.length_fn!r}")
        if settings.max_concurrent_batches < 1:
            raise ValueError(
                f"max_concurrent_batches must be at least 1, got {settings.max_concurrent_batches}"
            )
        return settings

    def reconfigured(self, changes: Mapping[str, Any], runtime: frozenset[str]) -> Settings:
        """These settings with ``changes`` (options among ``runtime``) applied, checked as at
        decoration time: the same errors for the same bad values."""
        fixed = sorted(set(changes) - runtime)
        if fixed:
            raise TypeError(
                f"reconfigure cannot change {', '.join(map(repr, fixed))} while the processor "
                f"runs; it takes {', '.join(sorted(runtime))}"
            )
        given = {**self.given, **changes}
        # A fixed timeout_ms given now replaces "auto" and the bound that went with it.
        if changes.get("timeout_ms", "auto") != "auto" and "max_timeout_ms" not in changes:
            given.pop("max_timeout_ms", None)
        return Settings.of(given, self.schema)

    def length_of(self) -> Callable[[Any], int] | None:
        """How to measure an item, or None when no option looks at lengths."""
        if self.length_fn is not None:
            return self.length_fn
        if self.sort_by_length or self.max_batch_tokens is not None:
            return len
        return None
