"""The statistics a processor reports."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from batched._options import BatchSettings

# The fields that hold durations in seconds, printed in milliseconds by ``str()``.
_SECONDS = frozenset(
    {"avg_processing_time", "queue_wait_p50", "queue_wait_p99", "batch_time_p50", "batch_time_p99"}
)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """A snapshot of a processor's work so far. Times are in seconds.

    ``queue_wait_*`` measure each item from its arrival to its dispatch; ``batch_time_*`` measure
    each batch from its dispatch until its results were handed back.

    Why batches left: ``full_batches`` because ``batch_size`` items were waiting,
    ``deadline_batches`` because the oldest item had waited ``timeout_ms``, ``drain_batches``
    during a draining shutdown. Under ``timeout_ms="auto"``, ``idle_batches`` left at once
    because traffic was too sparse for waiting to pay, and ``adaptive_batches`` once waiting for
    more items stopped paying.

    ``padded_fraction`` is the share of padded positions that held padding, over the batches the
    inference flavours padded. The ``items_*`` counters count items that got no result from the
    function: ``items_failed`` because their batch raised, ``items_timed_out`` because their
    caller's ``timeout`` passed, ``items_cancelled`` because their caller was cancelled or
    interrupted, ``items_rejected`` because the queue refused them (full, or over
    ``max_batch_tokens``).

    ``settings`` holds the options in force, which ``reconfigure`` may have changed.
    """

    queue_size: int = 0
    total_processed: int = 0
    total_batches: int = 0
    avg_batch_size: float = 0.0
    avg_processing_time: float = 0.0
    queue_wait_p50: float = 0.0
    queue_wait_p99: float = 0.0
    batch_time_p50: float = 0.0
    batch_time_p99: float = 0.0
    full_batches: int = 0
    deadline_batches: int = 0
    drain_batches: int = 0
    idle_batches: int = 0
    adaptive_batches: int = 0
    padded_fraction: float = 0.0
    items_failed: int = 0
    items_timed_out: int = 0
    items_cancelled: int = 0
    items_rejected: int = 0
    settings: BatchSettings = field(default_factory=BatchSettings)

    def __str__(self) -> str:
        """Every field, with durations in milliseconds and their unit written out (the
        attributes themselves are in seconds)."""
        parts = []
        for stat in fields(self):
            value = getattr(self, stat.name)
            if stat.name in _SECONDS:
                parts.append(f"{stat.name}={value * 1e3:.3f} ms")
            elif isinstance(value, float):
                parts.append(f"{stat.name}={value:.3f}")
            else:
                parts.append(f"{stat.name}={value}")
        return f"BatchStats({', '.join(parts)})"
