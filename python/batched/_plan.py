"""How a batch becomes a call of the user function and how its output settles the batch.

The general flavours pass the list of items and split the output into one row per item; the
inference flavours collate feature segments and hand each call its slice of the output.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from typing import Any, Protocol

from batched import _core
from batched._log import logger
from batched._reentry import enter_batch


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


def run_batch(batch: _core.Batch, resolve: Resolver, plan: Plan, isolate: bool) -> bool:
    """Runs one batch on this thread; returns False once the function's owner is gone.

    A function of its own so that the batch, the bound function and the output are released
    before the worker sleeps again.
    """
    func = resolve()
    if func is None:
        owner_gone(batch)
        return False
    _run(batch, func, plan, isolate)
    return True


def _run(batch: _core.Batch, func: Callable[..., Any], plan: Plan, isolate: bool) -> None:
    try:
        try:
            args, kwargs, state = plan.arguments(batch)
        finally:
            # Callers served by earlier batches wake only now: woken while the arguments
            # were built, they would have competed with it for the GIL.
            batch.wake_served()
        output = func(*args, **kwargs)
        plan.settle(batch, output, state)
    except Exception as error:
        if not _retry_in_halves(batch, error, isolate):
            batch.fail(error)
            return
        del error
        for half in batch.split(len(batch) // 2):
            _run(half, func, plan, isolate)
    except BaseException as error:  # every caller must hear of it, whatever it is
        batch.fail(error)


# What the batch's own task re-raises once its callers have the exception: cancellation must
# end the task, and asyncio stops the loop for KeyboardInterrupt and SystemExit. Any other
# BaseException (GeneratorExit) is only the callers' to hear of.
_STOPS_THE_TASK = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


async def run_batch_async(batch: _core.Batch, resolve: Resolver, plan: Plan, isolate: bool) -> None:
    """Runs one batch of an ``async def`` function on the current event loop, in a task of its
    own: calls of the same processor from inside it are refused (see ``_reentry``)."""
    func = resolve()
    if func is None:
        owner_gone(batch)
        return
    scope = enter_batch(resolve)  # the resolver stands for its processor
    try:
        await _run_async(batch, func, plan, isolate)
    finally:
        scope.active = False


async def _run_async(
    batch: _core.Batch, func: Callable[..., Any], plan: Plan, isolate: bool
) -> None:
    try:
        args, kwargs, state = plan.arguments(batch)
        output = await func(*args, **kwargs)
        plan.settle(batch, output, state)
    except Exception as error:
        if not _retry_in_halves(batch, error, isolate):
            batch.fail(error)
            return
        del error
        for half in batch.split(len(batch) // 2):
            await _run_async(half, func, plan, isolate)
    except BaseException as error:  # cancellation, KeyboardInterrupt, SystemExit...
        batch.fail(error)
        if isinstance(error, _STOPS_THE_TASK):
            raise


def _retry_in_halves(batch: _core.Batch, error: Exception, isolate: bool) -> bool:
    """Whether ``on_error="isolate"`` retries a failed batch in halves (until the failing items
    are alone); logs the failure either way."""
    retry = isolate and len(batch) > 1
    if retry:
        logger.info("a batch of %d items failed (%r); retrying it in halves", len(batch), error)
    else:
        logger.warning(
            "the batch function failed on a batch of %d items; its callers get the exception",
            len(batch),
            exc_info=error,
        )
    return retry


# The longest item length the core takes (its lengths are 64-bit; sums saturate).
MAX_LENGTH = 2**63 - 1


def item_lengths(length_of: Callable[[Any], int] | None, item: Any) -> list[int] | None:
    """Each item's length for length-aware packing, or None when no option needs lengths."""
    if length_of is None:
        return None
    if not isinstance(item, list):  # the common case: one item, no list to walk
        length = length_of(item)
        fits = type(length) is int and 0 <= length <= MAX_LENGTH
        return [length if fits else _checked_length(length)]
    lengths = [length_of(x) for x in item]
    if not all(type(length) is int and 0 <= length <= MAX_LENGTH for length in lengths):
        return [_checked_length(length) for length in lengths]
    return lengths


def _checked_length(length: Any) -> int:
    try:
        count = operator.index(length)  # numpy integers too
    except TypeError:
        raise TypeError(
            f"an item's length must be a whole number, got {length!r} "
            f"({type(length).__name__}); check length_fn"
        ) from None
    if count < 0:
        raise ValueError(f"an item's length cannot be negative, got {count}; check length_fn")
    if count > MAX_LENGTH:
        raise ValueError(
            f"an item's length must be at most 2**63 - 1, got {count}; check length_fn"
        )
    return count
