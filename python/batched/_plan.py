"""How a batch becomes a call of the user function and how its output settles the batch.

The general flavours pass the list of items and split the output into one row per item; the
inference flavours collate feature segments and hand each call its slice of the output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from batched import _core


class Plan(Protocol):
    def arguments(self, batch: _core.Batch) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        """Positional and keyword arguments for the user function, plus state for settle()."""
        ...

    def settle(self, batch: _core.Batch, output: Any, state: Any) -> None:
        """Hands the user function's output to the batch's callers."""
        ...


class ItemsPlan:
    """The function takes the list of items and returns one result per item."""

    def arguments(self, batch: _core.Batch) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        return (batch.items(),), {}, None

    def settle(self, batch: _core.Batch, output: Any, state: Any) -> None:
        batch.complete(output)


ITEMS = ItemsPlan()

Resolver = Callable[[], Callable[..., Any] | None]


def owner_gone(batch: _core.Batch) -> None:
    batch.fail(_core.ProcessorClosedError("the object owning this batched method was collected"))


def run_batch(batch: _core.Batch, resolve: Resolver, plan: Plan) -> bool:
    """Runs one batch on this thread; returns False once the function's owner is gone.

    A function of its own so that the batch, the bound function and the output are released
    before the worker sleeps again.
    """
    func = resolve()
    if func is None:
        owner_gone(batch)
        return False
    try:
        args, kwargs, state = plan.arguments(batch)
        output = func(*args, **kwargs)
        plan.settle(batch, output, state)
    except BaseException as error:  # every caller must hear of it, whatever it is
        batch.fail(error)
    return True


async def run_batch_async(batch: _core.Batch, resolve: Resolver, plan: Plan) -> None:
    """Runs one batch of an ``async def`` function on the current event loop."""
    func = resolve()
    if func is None:
        owner_gone(batch)
        return
    try:
        args, kwargs, state = plan.arguments(batch)
        output = await func(*args, **kwargs)
        plan.settle(batch, output, state)
    except BaseException as error:
        batch.fail(error)
        if not isinstance(error, Exception):  # cancellation, KeyboardInterrupt, SystemExit
            raise


def item_lengths(length_of: Callable[[Any], int] | None, item: Any) -> list[int] | None:
    """Each item's length for length-aware packing, or None when no option needs lengths."""
    if length_of is None:
        return None
    return [length_of(x) for x in (item if isinstance(item, list) else [item])]
