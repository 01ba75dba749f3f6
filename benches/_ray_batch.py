"""Ray Serve's ``@serve.batch`` outside a Serve deployment, as a peer in the benchmarks.

Ray 2.60's batch queue asks for the replica context in its constructor only to log a warning
when ``max_batch_size * max_concurrent_batches`` exceeds the deployment's
``max_ongoing_requests``. Outside a deployment there is no replica context, so that check is
replaced by a no-op here; the queue, its wait and its dispatch are Ray's own code, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve
from ray.serve import batching


def _no_replica_check(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = _no_replica_check  # type: ignore[method-assign]


def ray_batch(
    func: Callable[[list[Any]], Awaitable[list[Any]]],
    *,
    batch_size: int,
    timeout_ms: float,
    max_concurrent_batches: int = 1,
) -> Callable[[Any], Awaitable[Any]]:
    """``func`` (an ``async def`` over a list) batched by ``@serve.batch`` with these options.
    Each call awaits one item's result."""
    decorate = serve.batch(
        max_batch_size=batch_size,
        batch_wait_timeout_s=timeout_ms / 1000.0,
        max_concurrent_batches=max_concurrent_batches,
    )
    # Ray's stubs describe a function of its own shape; an async def over a list is what it
    # batches at run time.
    batched: Callable[[Any], Awaitable[Any]] = decorate(func)  # type: ignore[arg-type]
    return batched
