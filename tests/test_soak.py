"""Soak: many calls through the thread API, and instances of a batched class made and dropped
all along, with no memory growth, no leaked thread and no processor left behind.

``BATCHED_SOAK_CALLS`` sets the measured calls (default 200 000; millions for a real soak) and
``BATCHED_SOAK_MAX_RSS_MB`` the resident-set growth allowed (default 20 MB).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field

import batched
import pytest
from conftest import wait_until

CALLS = int(os.environ.get("BATCHED_SOAK_CALLS", "200000"))
MAX_RSS_GROWTH_MB = float(os.environ.get("BATCHED_SOAK_MAX_RSS_MB", "20"))
THREADS = 64
LIST_EVERY, LIST_SIZE = 16, 4  # every 16th call sends a list of 4 items

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self"),
]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


class Model:
    def __init__(self, scale: int) -> None:
        self.scale = scale

    @batched.dynamically(batch_size=8, timeout_ms=1.0)
    def predict(self, items: list[int]) -> list[int]:
        return [item * self.scale for item in items]


@dataclass
class Tally:
    items: int = 0
    wrong: list[str] = field(default_factory=list)
    instances: int = 0
    not_freed: int = 0


def call_many(processor: batched.BatchProcessor[int, int], calls: int, tally: Tally) -> None:
    lock = threading.Lock()

    def work(share: int, start: int) -> None:
        items, wrong = 0, []
        for index in range(share):
            value = start + index * LIST_SIZE
            if index % LIST_EVERY == LIST_EVERY - 1:
                batch = list(range(value, value + LIST_SIZE))
                if processor(batch) != [2 * item for item in batch]:
                    wrong.append(f"list from {value}")
                items += LIST_SIZE
            else:
                if processor(value) != 2 * value:
                    wrong.append(f"item {value}")
                items += 1
        with lock:
            tally.items += items
            tally.wrong += wrong

    threads = [
        threading.Thread(target=work, args=(calls // THREADS, n * 10**9)) for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def churn(stop: threading.Event, tally: Tally) -> None:
    """Makes, uses and drops Model instances; each one's processor must go with it."""
    while not stop.wait(0.02):
        tally.instances += 1
        model = Model(tally.instances)
        assert model.predict([1, 2]) == [tally.instances, 2 * tally.instances]
        processor = weakref.ref(model.predict)
        del model
        gc.collect()
        deadline = time.monotonic() + 10
        while processor() is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        tally.not_freed += processor() is not None


def phase(processor: batched.BatchProcessor[int, int], calls: int) -> Tally:
    tally, stop = Tally(), threading.Event()
    churner = threading.Thread(target=churn, args=(stop, tally))
    churner.start()
    try:
        call_many(processor, calls, tally)
    finally:
        stop.set()
        churner.join()
    return tally


def settle() -> None:
    for _ in range(3):
        gc.collect()
        time.sleep(0.2)


def test_no_growth_no_leaked_thread_no_processor_left_behind() -> None:
    processor = batched.BatchProcessor(lambda xs: [2 * x for x in xs], batch_size=16, timeout_ms=1)
    try:
        warm = phase(processor, CALLS // 10)
        settle()
        rss_before, threads_before = rss_bytes(), thread_count()
        run = phase(processor, CALLS)
        settle()
        growth_mb = (rss_bytes() - rss_before) / 1e6
        # The dropped instances' worker threads end once their processors are collected.
        wait_until(lambda: thread_count() <= threads_before, "the instances' threads to end")
        threads_after = thread_count()
        stats = processor.stats
    finally:
        processor.shutdown()
    assert not warm.wrong, warm.wrong[:10]
    assert not run.wrong, run.wrong[:10]
    assert warm.instances > 0
    assert run.instances > 0
    assert warm.not_freed == run.not_freed == 0
    assert threads_after == threads_before
    assert growth_mb < MAX_RSS_GROWTH_MB, f"RSS grew by {growth_mb:.1f} MB"
    assert stats.total_processed == warm.items + run.items
    assert stats.queue_size == 0
