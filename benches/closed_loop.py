"""What length-aware picking can reach for a closed loop of blocking callers: a model, not a run.

In ``embed.py`` (c) and ``padding.py`` every caller thread sends its next item only once its
last one came back, so the scheduler never holds more items than there are callers, minus the
batch in flight. How tightly a batch can be packed by length is then bounded by that pool, not
by the picking rule. This script replays both workloads against a cost model fitted on this
machine and compares picking rules, so that a target can be judged before it is chased:

* ``embed``: 64 callers, 1 024 sentences of 5..60 words (``word + 3`` tokens: words plus
  special tokens, as all-MiniLM-L6-v2's tokenizer gives for the benchmark's vocabulary), one
  forward pass costing ``20 ms + 111 us x padded positions``. Both constants were fitted from
  ``model.encode`` over sorted batches of 16 and 32 and unsorted batches of 16 on the 2-core
  machine; the model reproduces (c)'s measured padded fraction (0.157 against 0.159).
  "ideal" is the same sentences sorted by length in batches of 32, as (e) does.
* ``padding``: 16 callers, rows of 8..512 positions, a model costing ``350 us`` per batch
  (the measured gap between batches plus the sleep's overshoot) and ``0.305 us`` per padded
  position, a token budget per batch; it reproduces ``padding.py``'s sort_budget variant
  (4 865 items/s, padded 0.098, 3.0 rows per batch, against 4 879, 0.101 and 3.0 measured).

Rules:

* ``nearest``: the scheduler's rule (``choose_packed`` in ``rust/pending.rs``): the oldest item
  plus its nearest neighbours in length, within the batch size and budget;
* ``tightest``: the run of items adjacent in length with the smallest spread (for a budget: the
  most items that fit, then the smallest spread); an item passed over 3 times must go next;
* ``+ refill``: a what-if in which the callers just served are back before the next batch is
  picked. That means holding items past their deadline for their return, which the dispatch
  rules forbid (a batch leaves as soon as the oldest item has waited ``timeout_ms``, and in a
  saturated closed loop the oldest always has); it shows what that would buy.

    python benches/closed_loop.py             # both workloads, a few seconds
    python benches/closed_loop.py --seeds 10  # more workloads per figure
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Pick = Callable[[list["Item"], int, int], list["Item"]]
PASS_OVER_LIMIT = 3


@dataclass
class Item:
    """A queued item: its arrival order, its length, how many batches have passed it over."""

    arrival: int
    length: int
    passed_over: int = 0


@dataclass(frozen=True)
class Workload:
    callers: int
    items: int
    min_length: int
    max_length: int
    extra_tokens: int  # added to every length, not counted by the picking rule
    batch_cost_s: float
    position_cost_s: float

    def tokens(self, item: Item) -> int:
        return item.length + self.extra_tokens

    def batch_s(self, batch: Sequence[Item]) -> float:
        longest = max(self.tokens(item) for item in batch)
        return self.batch_cost_s + self.position_cost_s * len(batch) * longest


EMBED = Workload(64, 1024, 5, 60, 3, 20e-3, 111e-6)
PADDING = Workload(16, 20_000, 8, 512, 0, 350e-6, 5e-3 / (32 * 512))


@dataclass
class Outcome:
    items_per_s: float
    padded_fraction: float
    mean_batch: float


@dataclass
class Tally:
    seconds: float = 0.0
    real: int = 0
    padded: int = 0
    batches: int = 0
    items: int = 0


def padded_cost(batch: Sequence[Item]) -> int:
    return len(batch) * max(item.length for item in batch)


def nearest(pool: list[Item], size: int, budget: int) -> list[Item]:
    oldest = min(pool, key=lambda item: item.arrival)
    by_distance = sorted(pool, key=lambda item: (abs(item.length - oldest.length), item.length))
    chosen: list[Item] = []
    for item in by_distance:
        grown = [*chosen, item]
        if chosen and (len(grown) > size or padded_cost(grown) > budget):
            break
        chosen = grown
    return chosen


def tightest(pool: list[Item], size: int, budget: int) -> list[Item]:
    by_length = sorted(pool, key=lambda item: item.length)
    overdue = [item for item in pool if item.passed_over >= PASS_OVER_LIMIT]
    best: tuple[tuple[int, int], list[Item]] | None = None
    for first in range(len(by_length)):
        for last in range(first, len(by_length)):
            run = by_length[first : last + 1]
            if len(run) > size or (len(run) > 1 and padded_cost(run) > budget):
                break
            if overdue and not any(item in run for item in overdue):
                continue
            score = (len(run), run[0].length - run[-1].length)
            if best is None or score > best[0]:
                best = (score, run)
    return best[1] if best else nearest(pool, size, budget)


def replay(
    workload: Workload, pick: Pick, size: int, budget: int, refill: bool, seed: int
) -> Outcome:
    rng = random.Random(seed)
    lengths = [rng.randint(workload.min_length, workload.max_length) for _ in range(workload.items)]
    pool = [Item(arrival, lengths[arrival]) for arrival in range(workload.callers)]
    sent = len(pool)
    tally = Tally()
    returning = 0  # callers served by the batch in flight, about to send their next item

    def send(count: int) -> None:
        nonlocal sent
        for _ in range(min(count, workload.items - sent)):
            pool.append(Item(sent, lengths[sent]))
            sent += 1

    while tally.items < workload.items:
        if refill:
            send(returning)
        batch = pick(pool, size, budget)
        for item in batch:
            pool.remove(item)
        for item in pool:
            item.passed_over += 1
        tally.seconds += workload.batch_s(batch)
        tally.real += sum(workload.tokens(item) for item in batch)
        tally.padded += len(batch) * max(workload.tokens(item) for item in batch)
        tally.batches += 1
        tally.items += len(batch)
        if not refill:
            send(returning)  # they come back while the next batch already runs
        returning = len(batch)
    return Outcome(
        tally.items / tally.seconds, 1 - tally.real / tally.padded, tally.items / tally.batches
    )


def ideal(workload: Workload, seed: int, size: int) -> float:
    rng = random.Random(seed)
    lengths = sorted(
        rng.randint(workload.min_length, workload.max_length) for _ in range(workload.items)
    )
    items = [Item(i, length) for i, length in enumerate(lengths)]
    seconds = sum(workload.batch_s(items[i : i + size]) for i in range(0, len(items), size))
    return workload.items / seconds


def averaged(outcomes: list[Outcome]) -> Outcome:
    return Outcome(
        statistics.mean(o.items_per_s for o in outcomes),
        statistics.mean(o.padded_fraction for o in outcomes),
        statistics.mean(o.mean_batch for o in outcomes),
    )


RULES: dict[str, Pick] = {"nearest": nearest, "tightest": tightest}


def embed_table(seeds: range) -> list[str]:
    best = statistics.mean(ideal(EMBED, seed, 32) for seed in seeds)
    rows = [
        f"embed: {EMBED.callers} blocking callers; ideal (sorted, batches of 32) "
        f"{best:.1f} sentences/s",
        "| rule | batch size | refill | sentences/s | of ideal | padded fraction |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, pick in RULES.items():
        for refill in (False, True):
            for size in (16, 24, 32):
                got = averaged([replay(EMBED, pick, size, 1 << 30, refill, seed) for seed in seeds])
                rows.append(
                    f"| {name} | {size} | {'yes' if refill else 'no'} | {got.items_per_s:.1f} "
                    f"| {got.items_per_s / best:.2f} | {got.padded_fraction:.3f} |"
                )
    return rows


def padding_table(seeds: range) -> list[str]:
    rows = [
        f"padding: {PADDING.callers} blocking callers, batch size 32, token budget varied",
        "| rule | budget | items/s | padded fraction | mean batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, pick in RULES.items():
        for budget in (1024, 1280, 1536, 2048):
            got = averaged([replay(PADDING, pick, 32, budget, False, seed) for seed in seeds])
            rows.append(
                f"| {name} | {budget} | {got.items_per_s:,.0f} | {got.padded_fraction:.3f} "
                f"| {got.mean_batch:.1f} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="workloads averaged per figure")
    parser.add_argument("--only", choices=["embed", "padding"], action="append")
    args = parser.parse_args(argv)
    seeds = range(1, args.seeds + 1)
    tables = {"embed": embed_table, "padding": padding_table}
    for name in args.only or list(tables):
        print("\n".join(tables[name](seeds)), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
