"""Type stubs of the Rust extension module (see rust/python/)."""

from asyncio import AbstractEventLoop, Future
from collections.abc import Callable
from typing import Any, Literal, Self, final

from typing_extensions import disjoint_base

__all__ = [
    "Batch",
    "BatchSettings",
    "BatchStats",
    "BatchedError",
    "CallEntry",
    "LoopQueue",
    "Options",
    "Pinned",
    "Processor",
    "ProcessorClosedError",
    "QueueFullError",
    "Ticket",
    "__version__",
    "reset_after_fork",
]

__version__: str

class BatchedError(Exception):
    """Base class of the errors raised by batched itself."""

class ProcessorClosedError(BatchedError):
    """The processor was shut down before this call could run."""

class QueueFullError(BatchedError):
    """The processor's queue had no room for this call (see max_queue_size)."""

_Deliver = Callable[
    [AbstractEventLoop, list[Future[Any]], list[Any], list[Future[Any]], list[BaseException]],
    None,
]

@final
class Options:
    """A processor's options, checked: ``TypeError`` for an unknown option or a wrong type,
    ``ValueError`` for a value out of range. Unset options take their defaults."""

    def __new__(
        cls,
        *,
        batch_size: int = ...,
        timeout_ms: float | Literal["auto"] = ...,
        max_timeout_ms: float = ...,
        small_batch_threshold: int = ...,
        sort_by_length: bool = ...,
        max_batch_tokens: int | None = ...,
        max_queue_size: int | None = ...,
        on_full: Literal["raise", "block"] = ...,
        on_error: Literal["fail", "isolate"] = ...,
        length_fn: Callable[[Any], int] | None = ...,
        max_concurrent_batches: int = ...,
    ) -> Options: ...
    def replace(self, **changes: Any) -> Options:
        """These options with ``changes`` applied, checked again."""
    @property
    def settings(self) -> BatchSettings: ...
    @property
    def isolate(self) -> bool: ...
    @property
    def block_when_full(self) -> bool: ...
    @property
    def max_concurrent_batches(self) -> int: ...
    @property
    def length_fn(self) -> Callable[[Any], int] | None:
        """``length_fn``, else ``len`` when an option looks at lengths, else None."""

@final
class BatchSettings:
    """The options :meth:`~batched.BatchProcessor.reconfigure` can change, as they stood when
    a statistics snapshot was taken. ``max_timeout_ms`` is None unless ``timeout_ms="auto"``."""

    def __new__(
        cls,
        *,
        batch_size: int = 32,
        timeout_ms: float | Literal["auto"] | None = None,
        max_timeout_ms: float | None = None,
        max_batch_tokens: int | None = None,
        max_concurrent_batches: int = 1,
    ) -> BatchSettings: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def timeout_ms(self) -> float | Literal["auto"]: ...
    @property
    def max_timeout_ms(self) -> float | None: ...
    @property
    def max_batch_tokens(self) -> int | None: ...
    @property
    def max_concurrent_batches(self) -> int: ...
    def as_dict(self) -> dict[str, Any]:
        """The settings as a dict of plain values, for JSON."""
    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

@final
class BatchStats:
    """A snapshot of a processor's work so far. Times are in seconds.

    ``queue_wait_*`` measure each item from its arrival to its dispatch; ``batch_time_*``
    measure each batch from its dispatch until its results were handed back.

    Why batches left: ``full_batches`` because ``batch_size`` items were waiting,
    ``deadline_batches`` because the oldest item had waited ``timeout_ms``, ``drain_batches``
    during a draining shutdown. Under ``timeout_ms="auto"``, ``idle_batches`` left at once
    because traffic was too sparse for waiting to pay, and ``adaptive_batches`` once waiting
    for more items stopped paying. ``batches_by_reason`` has them all by name.

    ``padded_fraction`` is the share of padded positions that held padding, over the batches
    the inference flavours padded. The ``items_*`` counters count items that got no result from
    the function: ``items_failed`` because their batch raised, ``items_timed_out`` because
    their caller's ``timeout`` passed, ``items_cancelled`` because their caller was cancelled
    or interrupted, ``items_rejected`` because the queue refused them (full, or over
    ``max_batch_tokens``). ``settings`` holds the options in force.

    ``str()`` shows durations in milliseconds, with the unit.
    """

    def __new__(
        cls,
        *,
        queue_size: int = 0,
        total_processed: int = 0,
        total_batches: int = 0,
        avg_batch_size: float = 0.0,
        avg_processing_time: float = 0.0,
        queue_wait_p50: float = 0.0,
        queue_wait_p99: float = 0.0,
        batch_time_p50: float = 0.0,
        batch_time_p99: float = 0.0,
        full_batches: int = 0,
        deadline_batches: int = 0,
        drain_batches: int = 0,
        idle_batches: int = 0,
        adaptive_batches: int = 0,
        padded_fraction: float = 0.0,
        items_failed: int = 0,
        items_timed_out: int = 0,
        items_cancelled: int = 0,
        items_rejected: int = 0,
        settings: BatchSettings | None = None,
    ) -> BatchStats: ...
    @property
    def queue_size(self) -> int: ...
    @property
    def total_processed(self) -> int: ...
    @property
    def total_batches(self) -> int: ...
    @property
    def avg_batch_size(self) -> float: ...
    @property
    def avg_processing_time(self) -> float: ...
    @property
    def queue_wait_p50(self) -> float: ...
    @property
    def queue_wait_p99(self) -> float: ...
    @property
    def batch_time_p50(self) -> float: ...
    @property
    def batch_time_p99(self) -> float: ...
    @property
    def full_batches(self) -> int: ...
    @property
    def deadline_batches(self) -> int: ...
    @property
    def drain_batches(self) -> int: ...
    @property
    def idle_batches(self) -> int: ...
    @property
    def adaptive_batches(self) -> int: ...
    @property
    def batches_by_reason(self) -> dict[str, int]: ...
    @property
    def padded_fraction(self) -> float: ...
    @property
    def items_failed(self) -> int: ...
    @property
    def items_timed_out(self) -> int: ...
    @property
    def items_cancelled(self) -> int: ...
    @property
    def items_rejected(self) -> int: ...
    @property
    def settings(self) -> BatchSettings: ...
    def as_dict(self) -> dict[str, Any]:
        """Every field as a dict of plain values (``settings`` too), for JSON."""
    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]: ...
    def __eq__(self, value: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

_Histograms = dict[str, tuple[list[int], float, int]]

@final
class Ticket:
    def cancel(self, timed_out: bool = False) -> None: ...

@final
class Batch:
    def wake_served(self) -> None: ...
    def __len__(self) -> int: ...
    def items(self) -> list[Any]: ...
    def complete(self, output: Any) -> None: ...
    def fail(self, error: BaseException) -> None: ...
    def segments(self) -> list[tuple[Any, int, int]]: ...
    def lengths(self) -> list[int]: ...
    def complete_segments(self, values: list[Any]) -> None: ...
    def record_padding(self, real: int, padded: int) -> None: ...
    def split(self, at: int) -> tuple[Batch, Batch]: ...

@final
class Processor:
    def __new__(cls, options: Options, deliver: _Deliver) -> Processor: ...
    def call(
        self,
        arg: Any,
        priority: int = 0,
        timeout: float | None = None,
        rows: int | None = None,
        lengths: list[int] | None = None,
    ) -> Any: ...
    def submit(
        self,
        arg: Any,
        event_loop: AbstractEventLoop,
        future: Future[Any],
        priority: int = 0,
        rows: int | None = None,
        lengths: list[int] | None = None,
    ) -> Ticket | None: ...
    def wait_for_room(
        self, count: int, event_loop: AbstractEventLoop, future: Future[None]
    ) -> bool: ...
    def record_timed_out(self, items: int) -> None: ...
    def next_batch(self) -> Batch | None: ...
    def reconfigure(self, options: Options) -> None: ...
    def close(self, drain: bool) -> None: ...
    def fail_remaining(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> BatchStats: ...
    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> _Histograms: ...

@disjoint_base
class Pinned:
    """Base class of every processor: a method's processor keeps the instance it was fetched
    from until its next call takes it."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def _pin(self, owner: object) -> None: ...
    def _take_pin(self) -> object | None: ...

@disjoint_base
class CallEntry(Pinned):
    """Base class of ``batched.BatchProcessor``: its ``__call__``, in Rust."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    def _bind_core(
        self, core: Processor, lengths_of: Callable[[Any], list[int] | None] | None
    ) -> None: ...
    def __call__(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any: ...

def reset_after_fork() -> None:
    """In a forked child: forget the parent's hand-over thread (it did not survive the fork)."""

@final
class LoopQueue:
    def __new__(
        cls, options: Options, deliver: _Deliver, share_stats_with: LoopQueue | None = None
    ) -> LoopQueue: ...
    def submit(
        self,
        arg: Any,
        event_loop: AbstractEventLoop,
        future: Future[Any],
        priority: int = 0,
        rows: int | None = None,
        lengths: list[int] | None = None,
    ) -> tuple[Ticket | None, bool]: ...
    def wait_for_room(
        self, count: int, event_loop: AbstractEventLoop, future: Future[None]
    ) -> bool: ...
    def record_timed_out(self, items: int) -> None: ...
    def poll(self, draining: bool = False) -> tuple[Batch | None, float | None]: ...
    def reconfigure(self, options: Options) -> None: ...
    def close(self) -> None: ...
    def fail_remaining(self) -> None: ...
    def __len__(self) -> int: ...
    def stats(self) -> BatchStats: ...
    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> _Histograms: ...
