"""Refusing a call made from inside the processor's own running batch, for ``async def`` batch
functions (the thread workers are recognised by the Rust core).

Such a call queues an item behind the batch that is awaiting it: with one batch at a time it
could only run once that batch returned, so it would wait for its ``timeout=``, or for ever.
"""

from __future__ import annotations

from contextvars import ContextVar


class BatchScope:
    """Marks the context of one running batch (and of the tasks it starts) as inside it, while
    it runs: a task that outlives the batch may then call the processor again."""

    __slots__ = ("active", "owner")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.active = True


_running_batch: ContextVar[BatchScope | None] = ContextVar("batched_running_batch", default=None)


def enter_batch(owner: object) -> BatchScope:
    """Marks the current context as running a batch of ``owner``; the caller sets the returned
    scope's ``active`` to False when the batch is over."""
    scope = BatchScope(owner)
    _running_batch.set(scope)
    return scope


def refuse_call_inside_own_batch(owner: object, name: str) -> None:
    """Raises ``RuntimeError`` when the current task runs (or was started by) a batch of
    ``owner`` that is still running; ``name`` is the called processor's, named in the error."""
    scope = _running_batch.get()
    if scope is not None and scope.owner is owner and scope.active:
        raise RuntimeError(
            f"{name} was called from inside its own batch function: the call would wait for a "
            "batch that cannot start before the running one returns, which is waiting for it "
            "(a deadlock). Call the undecorated function directly, or give the inner call "
            "another processor"
        )
