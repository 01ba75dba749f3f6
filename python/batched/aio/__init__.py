"""The asyncio flavour: ``await f(item)`` batches calls made from event-loop tasks.

An ``async def`` batch function runs on the caller's own event loop, scheduled by that loop's
queue in the Rust core: a batch leaves when it is full, or by a one-shot timer set for the
oldest item's deadline, and an idle processor has no timer at all. A plain ``def`` batch function
runs off the loop, in worker threads, so that it never blocks the loop.
"""

from batched.aio import inference
from batched.aio._processor import AsyncBatchProcessor, dynamically

__all__ = ["AsyncBatchProcessor", "dynamically", "inference"]
