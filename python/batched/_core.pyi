"""Type stubs of the Rust extension module (see rust/python/)."""

from asyncio import AbstractEventLoop, Future
from collections.abc import Callable
from typing import Any, Self, final

from typing_extensions import disjoint_base

__all__ = [
    "Batch",
    "BatchedError",
    "CallEntry",
    "LoopQueue",
    "Processor",
    "ProcessorClosedError",
    "QueueFullError",
    "QueueOptions",
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
class QueueOptions:
    """Checked batching options; raises ``ValueError`` for a bad one."""

    def __new__(
        cls,
        batch_size: int,
        timeout_ms: float,
        small_batch_threshold: int,
        max_batch_tokens: int | None = None,
        sort_by_length: bool = False,
        max_queue_size: int | None = None,
        on_full: str = "raise",
        adaptive: bool = False,
    ) -> QueueOptions: ...
    def __repr__(self) -> str: ...

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
    def __new__(cls, options: QueueOptions, deliver: _Deliver) -> Processor: ...
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
    def reconfigure(self, options: QueueOptions) -> None: ...
    def close(self, drain: bool) -> None: ...
    def fail_remaining(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> _Histograms: ...

@disjoint_base
class CallEntry:
    """Base class of ``batched.BatchProcessor``: its ``__call__``, in Rust."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self: ...
    def _bind_core(
        self, core: Processor, lengths_of: Callable[[Any], list[int] | None] | None
    ) -> None: ...
    def _pin(self, owner: object) -> None: ...
    def _take_pin(self) -> object | None: ...
    def __call__(self, item: Any, /, *, timeout: float | None = None, priority: int = 0) -> Any: ...

def reset_after_fork() -> None:
    """In a forked child: forget the parent's hand-over thread (it did not survive the fork)."""

@final
class LoopQueue:
    def __new__(
        cls, options: QueueOptions, deliver: _Deliver, share_stats_with: LoopQueue | None = None
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
    def reconfigure(self, options: QueueOptions) -> None: ...
    def close(self) -> None: ...
    def fail_remaining(self) -> None: ...
    def __len__(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def histograms(self, time_bounds: list[float], size_bounds: list[int]) -> _Histograms: ...
