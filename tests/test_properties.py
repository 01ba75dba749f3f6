"""Property tests of the batch rules, through the public API only.

Each example holds the worker on a first batch, submits a random sequence of calls (sizes,
priorities, lists or single items) from one event loop, so that they queue in a known order,
then lets the worker go with ``timeout_ms=0``: from then on every batch is chosen from a queue
that holds everything not served yet. The batches the function saw must follow the rules of
docs/options.md and docs/design.md (``rust/pending.rs`` has them in code):

* no batch holds more than ``batch_size`` items, and while enough items wait, none holds fewer;
* every item is served exactly once, and every caller gets its own results in input order;
* lower priority values are served first;
* inside a priority, small calls (at most ``small_batch_threshold`` items) and bulk calls are
  each first in, first out, so the items of one call keep their order;
* small calls go before bulk calls, except that while both wait, bulk gets a quarter of
  the room left in each batch (a batch too small for a whole slot pays it in a later batch),
  and no more while small items still wait;
* with ``max_batch_tokens``, a batch of several items pads to at most the budget, and with
  ``sort_by_length`` the item first in line still goes in every batch;
* ``on_error="isolate"`` fails exactly the calls holding a bad item.

Nothing here depends on timing: the waits are handshakes, with guards only against a hang.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import batched
import pytest
from batched import aio
from conftest import Gate, await_until
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

GUARD = 30.0
FLAVOURS = ("thread", "async_def")

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# An item: (call number, index in its call, length). The plug is the first batch, held.
Item = tuple[int, int, int]
PLUG: Item = (-1, 0, 1)


@dataclass(frozen=True)
class CallPlan:
    lengths: tuple[int, ...]
    priority: int
    single: bool  # passed as the bare item (only for one item)
    poison: frozenset[int] = frozenset()  # indices of items the function fails on

    def items(self, number: int) -> list[Item]:
        return [(number, index, length) for index, length in enumerate(self.lengths)]


@dataclass
class Served:
    batches: list[list[Item]]  # every call of the function after the plug, in order
    outcomes: list[Any]  # per call: its result, or the exception it raised
    stats: batched.BatchStats


class Bad(Exception):
    pass


def result_of(item: Item) -> tuple[str, Item]:
    return ("done", item)


def serve(flavour: str, options: dict[str, Any], plans: list[CallPlan]) -> Served:
    """Queues ``plans`` in order behind a held first batch, then lets them all run."""
    seen: list[list[Item]] = []
    gate = Gate()
    bad = {(number, index) for number, plan in enumerate(plans) for index in plan.poison}

    def body(items: list[Item]) -> list[tuple[str, Item]]:
        seen.append(list(items))
        if items == [PLUG]:
            gate.hold()
        if any(item[:2] in bad for item in items):
            raise Bad(items)
        return [result_of(item) for item in items]

    async def async_body(items: list[Item]) -> list[tuple[str, Item]]:
        seen.append(list(items))
        if items == [PLUG]:
            await gate.hold_async()
        if any(item[:2] in bad for item in items):
            raise Bad(items)
        return [result_of(item) for item in items]

    options = {**options, "timeout_ms": 0}

    async def main() -> Served:
        processor: Any
        if flavour == "thread":
            processor = batched.BatchProcessor(body, **options)
            call: Any = processor.acall
        else:
            processor = aio.AsyncBatchProcessor(async_body, **options)
            call = processor
        try:
            plug = asyncio.ensure_future(call(PLUG))
            await await_until(gate.entered.is_set, "the first batch to start")
            tasks = []
            for number, plan in enumerate(plans):
                items = plan.items(number)
                argument = items[0] if plan.single else items
                tasks.append(asyncio.ensure_future(call(argument, priority=plan.priority)))
            # Each task queues its call in its first step, in the order they were created.
            total = sum(len(plan.lengths) for plan in plans)
            await await_until(lambda: processor.stats.queue_size >= total, "every call queued")
            gate.release()
            assert await asyncio.wait_for(plug, GUARD) == result_of(PLUG)
            outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), GUARD)
        finally:
            gate.release()
            if flavour == "thread":
                processor.shutdown()
            else:
                await processor.ashutdown()
        assert seen[0] == [PLUG]
        return Served(batches=seen[1:], outcomes=list(outcomes), stats=processor.stats)

    return asyncio.run(main())


def check_results(plans: list[CallPlan], served: Served) -> None:
    """Every call that did not fail on a bad item got its own results, in input order."""
    for number, (plan, outcome) in enumerate(zip(plans, served.outcomes, strict=True)):
        if isinstance(outcome, Bad):
            continue
        want = [result_of(item) for item in plan.items(number)]
        assert outcome == (want[0] if plan.single else want), f"call {number}"


def check_served_once(plans: list[CallPlan], served: Served) -> None:
    every = Counter(item for batch in served.batches for item in batch)
    want = Counter(item for number, plan in enumerate(plans) for item in plan.items(number))
    assert every == want, "some item was lost or served twice"
    assert all(every[item] == 1 for item in every)
    assert served.stats.total_processed == sum(want.values()) + 1  # and the plug
    assert served.stats.queue_size == 0


def calls(max_items: int = 20, max_calls: int = 16) -> st.SearchStrategy[list[CallPlan]]:
    plan = st.builds(
        lambda count, priority, single: CallPlan((1,) * count, priority, single and count == 1),
        st.integers(1, max_items),
        st.integers(-2, 2),
        st.booleans(),
    )
    return st.lists(plan, min_size=1, max_size=max_calls)


@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(
    plans=calls(),
    batch_size=st.integers(1, 12),
    threshold=st.integers(0, 6),
)
def test_batches_follow_size_priority_and_class_rules(
    flavour: str, plans: list[CallPlan], batch_size: int, threshold: int
) -> None:
    options = {"batch_size": batch_size, "small_batch_threshold": threshold}
    served = serve(flavour, options, plans)
    check_results(plans, served)
    check_served_once(plans, served)

    def priority(item: Item) -> int:
        return plans[item[0]].priority

    def small(item: Item) -> bool:
        return len(plans[item[0]].lengths) <= threshold

    order = [item for batch in served.batches for item in batch]
    # Lower priority values first: everything was waiting when the first batch left.
    assert [priority(item) for item in order] == sorted(priority(item) for item in order)
    # First in, first out inside each priority and class, so each call keeps its order.
    for level in {plan.priority for plan in plans}:
        for is_small in (True, False):
            cls = [item for item in order if priority(item) == level and small(item) == is_small]
            assert cls == sorted(cls)

    waiting = Counter((priority(item), small(item)) for item in order)
    # Batch slots owed to bulk, in quarters: a quarter of each batch while both classes wait,
    # paid later when a batch is too small for a whole slot.
    owed: Counter[int] = Counter()
    remaining = len(order)
    for batch in served.batches:
        # Full batches while enough items wait, never more than batch_size.
        assert len(batch) == min(batch_size, remaining)
        room = batch_size
        for level in sorted({priority(item) for item in batch}):
            taken_small = sum(1 for i in batch if priority(i) == level and small(i))
            taken_bulk = sum(1 for i in batch if priority(i) == level and not small(i))
            small_left = waiting[level, True] - taken_small
            if waiting[level, True] and waiting[level, False]:
                owed[level] += room
                share = min(owed[level] // 4, waiting[level, False])
                owed[level] -= share * 4
            else:
                owed[level] = share = 0
            if waiting[level, True] and waiting[level, False]:
                # Both classes wait: bulk gets its share of the room, and no more while small
                # items are left waiting.
                assert taken_bulk >= min(share, waiting[level, False]), (batch, level)
                if small_left:
                    assert taken_bulk <= share, (batch, level)
            waiting[level, True] -= taken_small
            waiting[level, False] -= taken_bulk
            room -= taken_small + taken_bulk
        remaining -= len(batch)
    assert remaining == 0


def length_calls() -> st.SearchStrategy[list[CallPlan]]:
    plan = st.builds(
        lambda lengths, priority, single: CallPlan(
            tuple(lengths), priority, single and len(lengths) == 1
        ),
        st.lists(st.integers(1, 40), min_size=1, max_size=12),
        st.integers(-1, 1),
        st.booleans(),
    )
    return st.lists(plan, min_size=1, max_size=16)


@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(
    plans=length_calls(),
    batch_size=st.integers(1, 10),
    threshold=st.integers(0, 4),
    budget=st.one_of(st.none(), st.integers(40, 200)),
    sort_by_length=st.booleans(),
)
def test_length_aware_batches_keep_the_budget_and_serve_the_head_of_the_line(
    flavour: str,
    plans: list[CallPlan],
    batch_size: int,
    threshold: int,
    budget: int | None,
    sort_by_length: bool,
) -> None:
    assume(budget is not None or sort_by_length)  # else the first test's rules apply
    options = {
        "batch_size": batch_size,
        "small_batch_threshold": threshold,
        "max_batch_tokens": budget,
        "sort_by_length": sort_by_length,
        "length_fn": lambda item: item[2],
    }
    served = serve(flavour, options, plans)
    check_results(plans, served)
    check_served_once(plans, served)

    def line_position(item: Item) -> tuple[int, bool, int, int]:
        """Where an item stands in line: by priority, small calls first, then first in. (The
        packing window spans 8 batches, so the bulk share never puts a bulk item first.)"""
        plan = plans[item[0]]
        return (plan.priority, len(plan.lengths) > threshold, item[0], item[1])

    waiting = {item for batch in served.batches for item in batch}
    for batch in served.batches:
        assert 1 <= len(batch) <= batch_size
        if budget is not None and len(batch) > 1:
            assert len(batch) * max(item[2] for item in batch) <= budget, batch
        # The item first in line always goes, whatever the packing picks around it.
        assert min(waiting, key=line_position) in batch
        waiting.difference_update(batch)
    if not sort_by_length:
        # Without sorting, a batch is a prefix of the line: priorities and call order hold.
        order = [item for batch in served.batches for item in batch]
        priorities = [plans[item[0]].priority for item in order]
        assert priorities == sorted(priorities)
        for number in range(len(plans)):
            indices = [item[1] for item in order if item[0] == number]
            assert indices == sorted(indices)


def poisoned_calls() -> st.SearchStrategy[list[CallPlan]]:
    """Calls of up to 8 items, some with one bad item."""
    plan = st.integers(1, 8).flatmap(
        lambda count: st.builds(
            lambda priority, single, bad: CallPlan(
                (1,) * count,
                priority,
                single and count == 1,
                frozenset() if bad is None else frozenset({bad}),
            ),
            st.integers(-1, 1),
            st.booleans(),
            st.none() | st.integers(0, count - 1),
        )
    )
    return st.lists(plan, min_size=1, max_size=16)


@pytest.mark.parametrize("flavour", FLAVOURS)
@PROPERTY_SETTINGS
@given(plans=poisoned_calls(), batch_size=st.integers(1, 8), isolate=st.booleans())
def test_a_failing_batch_fails_exactly_the_right_callers(
    flavour: str, plans: list[CallPlan], batch_size: int, isolate: bool
) -> None:
    options = {"batch_size": batch_size, "on_error": "isolate" if isolate else "fail"}
    served = serve(flavour, options, plans)
    check_results(plans, served)
    bad = {(number, index) for number, plan in enumerate(plans) for index in plan.poison}
    failed_batches = [b for b in served.batches if any(item[:2] in bad for item in b)]
    for number, (plan, outcome) in enumerate(zip(plans, served.outcomes, strict=True)):
        if isolate:
            # Only the callers of bad items fail, each with the error of its own bad item alone.
            assert isinstance(outcome, Bad) == bool(plan.poison), number
            if plan.poison:
                (index,) = plan.poison
                assert outcome.args[0] == [plan.items(number)[index]]
        else:
            # Every caller with an item in a failing batch fails, and no other.
            shares = any(item[0] == number for batch in failed_batches for item in batch)
            assert isinstance(outcome, Bad) == shares, number
    assert served.stats.queue_size == 0
    if isolate:
        # Each bad item failed alone; the other items of its call were dropped unserved.
        assert served.stats.items_failed == len(bad)
    else:
        assert served.stats.items_failed == sum(len(batch) for batch in failed_batches)
