"""Dynamic batching: many concurrent single-item calls become batched calls of one function.

The queue, the batch rules and every wait live in a Rust core that runs with the GIL released.
Neither numpy nor torch is ever imported by the package: it works with them once the program
has imported them.
"""

from batched import aio, inference
from batched._core import (
    BatchedError,
    BatchSettings,
    BatchStats,
    ProcessorClosedError,
    QueueFullError,
)
from batched._core import __version__ as __version__
from batched._decorate import set_processor_warning_threshold
from batched._processor import BatchProcessor, dynamically

__all__ = [
    "BatchProcessor",
    "BatchSettings",
    "BatchStats",
    "BatchedError",
    "ProcessorClosedError",
    "QueueFullError",
    "aio",
    "dynamically",
    "inference",
    "set_processor_warning_threshold",
]
