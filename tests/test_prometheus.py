"""The Prometheus exporter, ``batched.prometheus``.

Every test scrapes a fresh ``CollectorRegistry`` with ``prometheus_client.generate_latest`` and
reads the exposition text back with prometheus_client's own parser, after running real batches.
Tests that need the worker busy block it inside the batch function on an event and wait for
the queue to hold what they submitted, so no assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import batched
import numpy as np
import pytest
from batched import aio, inference
from batched.aio import inference as aio_inference
from batched.prometheus import (
    DEFAULT_SIZE_BUCKETS,
    DEFAULT_TIME_BUCKETS,
    BatchedCollector,
    register,
)
from conftest import Gate, await_until, in_thread, run_python, wait_until
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

# An upper bound for anything that should happen "soon"; never reached unless something is wrong.
WAIT = 10.0

TIME_BUCKETS = [0.001, 0.01, 0.1, 1.0]
SIZE_BUCKETS = [1, 2, 4, 8]

HISTOGRAMS = ("batched_batch_size", "batched_queue_wait_seconds", "batched_batch_time_seconds")
# Why batches leave, as the ``<reason>_batches`` fields of BatchStats name them.
REASONS = ["full", "deadline", "drain", "idle", "adaptive"]
COUNTERS = (
    "batched_items_processed_total",
    "batched_items_failed_total",
    "batched_items_timed_out_total",
    "batched_items_cancelled_total",
    "batched_items_rejected_total",
)


# --------------------------------------------------------------------------------------------
# helpers


class Scrape:
    """One scrape of a registry: the exposition text and its samples, parsed back."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.text = generate_latest(registry).decode()
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(self.text):
            self.types[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"duplicate series {key}"
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def processors(self) -> set[str]:
        return {dict(labels)["processor"] for _, labels in self.samples}

    def histogram(
        self, name: str, processor: str
    ) -> tuple[list[tuple[float, float]], float, float]:
        """The ``(le, cumulative count)`` buckets in ascending order, the sum and the count;
        checks that the buckets never decrease and that the ``+Inf`` bucket is the count."""
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (sample, labels), value in self.samples.items()
            if sample == f"{name}_bucket" and dict(labels)["processor"] == processor
        )
        assert buckets, f"no buckets for {name} of {processor}"
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name} buckets decrease: {buckets}"
        assert buckets[-1][0] == math.inf
        count = self.value(f"{name}_count", processor=processor)
        assert buckets[-1][1] == count
        return buckets, self.value(f"{name}_sum", processor=processor), count


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def shutdowns() -> Iterator[list[Any]]:
    """Processors to shut down after the test, whatever happens."""
    processors: list[Any] = []
    yield processors
    for processor in processors:
        processor.shutdown(drain=False)


def double(items: list[int]) -> list[int]:
    return [2 * item for item in items]


# --------------------------------------------------------------------------------------------
# importing


def test_import_batched_does_not_import_prometheus_client() -> None:
    run_python(
        """
        import sys
        import batched, batched.aio, batched.inference, batched.aio.inference
        assert "prometheus_client" not in sys.modules, "batched imported prometheus_client"
        import batched.prometheus
        assert "prometheus_client" in sys.modules
        """
    )


def test_missing_prometheus_client_names_the_extra() -> None:
    result = run_python(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if it were not installed
        import batched
        try:
            import batched.prometheus
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("imported without prometheus_client")
        """
    )
    assert "batched[prometheus]" in result.stdout
    assert "prometheus_client" in result.stdout


# --------------------------------------------------------------------------------------------
# the metrics after real batches


def test_counts_and_histograms_after_real_batches(
    registry: CollectorRegistry, shutdowns: list[Any]
) -> None:
    processor = batched.dynamically(batch_size=4, timeout_ms=5.0)(double)
    shutdowns.append(processor)
    collector = BatchedCollector(
        registry=registry, time_buckets=TIME_BUCKETS, size_buckets=SIZE_BUCKETS
    )
    collector.add(processor, "double")

    # Ten items in one call: two full batches of 4, then 2 items that leave at the deadline.
    assert processor(list(range(10))) == [2 * n for n in range(10)]

    scrape = Scrape(registry)
    assert scrape.types == {
        "batched_queue_length": "gauge",
        "batched_items_processed": "counter",
        "batched_items_failed": "counter",
        "batched_items_timed_out": "counter",
        "batched_items_cancelled": "counter",
        "batched_items_rejected": "counter",
        "batched_batches": "counter",
        "batched_padding_ratio": "gauge",
        "batched_batch_size": "histogram",
        "batched_queue_wait_seconds": "histogram",
        "batched_batch_time_seconds": "histogram",
    }
    assert 'batched_items_processed_total{processor="double"} 10.0' in scrape.text
    assert "# TYPE batched_queue_wait_seconds histogram" in scrape.text
    assert scrape.value("batched_queue_length", processor="double") == 0
    assert scrape.value("batched_items_processed_total", processor="double") == 10
    for counter in COUNTERS[1:]:
        assert scrape.value(counter, processor="double") == 0, counter
    stats = processor.stats
    assert stats.batches_by_reason == {
        reason: getattr(stats, f"{reason}_batches") for reason in REASONS
    }
    by_reason = {
        reason: scrape.value("batched_batches_total", processor="double", reason=reason)
        for reason in REASONS
    }
    assert by_reason == {reason: 0 for reason in REASONS} | {"full": 2, "deadline": 1}
    assert scrape.value("batched_padding_ratio", processor="double") == 0

    sizes, size_sum, size_count = scrape.histogram("batched_batch_size", "double")
    assert sizes == [(1.0, 0), (2.0, 1), (4.0, 3), (8.0, 3), (math.inf, 3)]
    assert (size_sum, size_count) == (10, 3)

    waits, wait_sum, wait_count = scrape.histogram("batched_queue_wait_seconds", "double")
    assert [le for le, _ in waits] == [*TIME_BUCKETS, math.inf]
    assert wait_count == 10
    assert 0 < wait_sum < 10 * WAIT

    times, time_sum, time_count = scrape.histogram("batched_batch_time_seconds", "double")
    assert [le for le, _ in times] == [*TIME_BUCKETS, math.inf]
    assert time_count == 3
    assert 0 < time_sum < 3 * WAIT

    # The figures agree with the processor's own statistics.
    stats = processor.stats
    assert stats.total_batches == size_count
    assert stats.avg_batch_size == pytest.approx(size_sum / size_count)


def test_many_threads_and_several_processors(
    registry: CollectorRegistry, shutdowns: list[Any]
) -> None:
    first = batched.dynamically(batch_size=8, timeout_ms=2.0)(double)
    second = batched.dynamically(batch_size=8, timeout_ms=2.0)(double)
    shutdowns += [first, second]
    register(first, "first", registry=registry)
    register(second, "second", registry=registry)

    threads = [in_thread(lambda n=n: first(n)) for n in range(40)]
    for thread, _ in threads:
        thread.join(WAIT)
    assert sorted(outcome[0] for _, outcome in threads) == [2 * n for n in range(40)]
    assert second([1, 2, 3]) == [2, 4, 6]

    scrape = Scrape(registry)
    assert scrape.processors() == {"first", "second"}
    assert scrape.value("batched_items_processed_total", processor="first") == 40
    assert scrape.value("batched_items_processed_total", processor="second") == 3
    for name, items in (("first", 40), ("second", 3)):
        sizes, size_sum, size_count = scrape.histogram("batched_batch_size", name)
        assert size_sum == items
        assert [le for le, _ in sizes] == [*map(float, DEFAULT_SIZE_BUCKETS), math.inf]
        dispatched = sum(
            scrape.value("batched_batches_total", processor=name, reason=reason)
            for reason in REASONS
        )
        assert dispatched == size_count
        _, _, waits = scrape.histogram("batched_queue_wait_seconds", name)
        assert waits == items
        times, _, _ = scrape.histogram("batched_batch_time_seconds", name)
        assert [le for le, _ in times] == [*DEFAULT_TIME_BUCKETS, math.inf]


def test_failed_items_are_counted(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    @batched.dynamically(batch_size=8, timeout_ms=1.0)
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("the model is down")

    shutdowns.append(broken)
    register(broken, "broken", registry=registry)
    with pytest.raises(RuntimeError, match="the model is down"):
        broken([1, 2, 3])
    with pytest.raises(RuntimeError, match="the model is down"):
        broken(4)

    scrape = Scrape(registry)
    assert scrape.value("batched_items_failed_total", processor="broken") == 4
    # The items went through the function: processed counts them too.
    assert scrape.value("batched_items_processed_total", processor="broken") == 4
    _, size_sum, size_count = scrape.histogram("batched_batch_size", "broken")
    assert (size_sum, size_count) == (4, 2)


def held_at_zero(
    registry: CollectorRegistry, name: str, **options: Any
) -> tuple[batched.BatchProcessor[int, int], Gate, threading.Thread, list[Any]]:
    """A thread processor registered as ``name`` whose batch holding item 0 waits at a gate;
    returns it once that call's batch is held, with the gate and that call's thread and
    outcome."""
    gate = Gate(WAIT)

    def blocked(items: list[int]) -> list[int]:
        if 0 in items:
            gate.hold()
        return items

    processor = batched.BatchProcessor(blocked, batch_size=4, timeout_ms=1.0, **options)
    register(processor, name, registry=registry)
    thread, outcome = in_thread(lambda: processor(0))
    assert gate.entered.wait(WAIT)
    return processor, gate, thread, outcome


def test_timed_out_items_are_counted(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    blocked, gate, thread, outcome = held_at_zero(registry, "blocked")
    shutdowns.append(blocked)
    try:
        with pytest.raises(TimeoutError):
            blocked(1, timeout=0.01)
        scrape = Scrape(registry)
        assert scrape.value("batched_items_timed_out_total", processor="blocked") == 1
        assert scrape.value("batched_items_processed_total", processor="blocked") == 0
    finally:
        gate.release()
        thread.join(WAIT)
    assert outcome == [0]
    scrape = Scrape(registry)
    assert scrape.value("batched_items_processed_total", processor="blocked") == 1
    assert scrape.value("batched_items_timed_out_total", processor="blocked") == 1


def test_queue_length_and_rejected_items(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    bounded, gate, running, _ = held_at_zero(registry, "bounded", max_queue_size=2)
    shutdowns.append(bounded)
    queued, queued_outcome = in_thread(lambda: bounded([1, 2]))
    try:
        wait_until(lambda: bounded.stats.queue_size == 2, "two queued items")
        assert Scrape(registry).value("batched_queue_length", processor="bounded") == 2
        with pytest.raises(batched.QueueFullError):
            bounded(3)
        with pytest.raises(batched.QueueFullError):
            bounded([4, 5, 6])
        scrape = Scrape(registry)
        assert scrape.value("batched_items_rejected_total", processor="bounded") == 4
        assert scrape.value("batched_queue_length", processor="bounded") == 2
    finally:
        gate.release()
        running.join(WAIT)
        queued.join(WAIT)
    assert queued_outcome == [[1, 2]]
    scrape = Scrape(registry)
    assert scrape.value("batched_queue_length", processor="bounded") == 0
    assert scrape.value("batched_items_processed_total", processor="bounded") == 3
    assert scrape.value("batched_items_rejected_total", processor="bounded") == 4


def test_cancelled_items_are_counted(registry: CollectorRegistry) -> None:
    async def main() -> None:
        gate = Gate()

        @aio.dynamically(batch_size=4, timeout_ms=1.0)
        async def blocked(items: list[int]) -> list[int]:
            if 0 in items:
                await gate.hold_async()
            return items

        register(blocked, "blocked", registry=registry)
        running = asyncio.create_task(blocked(0))
        await await_until(gate.entered.is_set, "the first batch", WAIT)
        doomed = asyncio.create_task(blocked(1))
        await await_until(lambda: blocked.stats.queue_size == 1, "a queued item", WAIT)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        scrape = Scrape(registry)
        assert scrape.value("batched_items_cancelled_total", processor="blocked") == 1
        gate.release()
        assert await asyncio.wait_for(running, WAIT) == 0
        await blocked.ashutdown()
        scrape = Scrape(registry)
        assert scrape.value("batched_items_processed_total", processor="blocked") == 1
        assert scrape.value("batched_items_cancelled_total", processor="blocked") == 1

    asyncio.run(main())


def test_drained_batches_and_a_shut_down_processor(registry: CollectorRegistry) -> None:
    blocked, gate, running, _ = held_at_zero(registry, "blocked")
    queued, queued_outcome = in_thread(lambda: blocked(1))
    try:
        wait_until(lambda: blocked.stats.queue_size == 1, "a queued item")
        stopping, _ = in_thread(lambda: blocked.shutdown(drain=True))
        wait_until(lambda: blocked.closed, "the shutdown to begin")
    finally:
        gate.release()
        running.join(WAIT)
        queued.join(WAIT)
    stopping.join(WAIT)
    assert queued_outcome == [1]

    # A processor that was shut down still reports its final values while it lives.
    scrape = Scrape(registry)
    assert scrape.value("batched_batches_total", processor="blocked", reason="deadline") == 1
    assert scrape.value("batched_batches_total", processor="blocked", reason="drain") == 1
    assert scrape.value("batched_items_processed_total", processor="blocked") == 2


def test_padding_ratio_of_an_inference_processor(registry: CollectorRegistry) -> None:
    @inference.dynamically(batch_size=8, timeout_ms=1.0)
    def model(features: dict[str, Any]) -> Any:
        return features["input_ids"].sum(axis=1)

    register(model, "model", registry=registry)
    try:
        # One call of two rows of lengths 1 and 3: one batch padded to 2 x 3, 2 of 6 padding.
        result = model(input_ids=[np.ones(1, dtype=np.int64), np.ones(3, dtype=np.int64)])
        assert result.tolist() == [1, 3]
    finally:
        model.shutdown()
    scrape = Scrape(registry)
    assert scrape.value("batched_padding_ratio", processor="model") == pytest.approx(2 / 6)
    assert scrape.value("batched_items_processed_total", processor="model") == 2


def test_every_flavour_is_exported(registry: CollectorRegistry) -> None:
    thread_processor = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)

    @aio.dynamically(batch_size=4, timeout_ms=1.0)
    async def async_double(items: list[int]) -> list[int]:
        return [2 * item for item in items]

    aio_threaded = aio.dynamically(batch_size=4, timeout_ms=1.0)(double)

    def rows(features: dict[str, Any]) -> Any:
        return features["x"] * 2

    thread_inference = inference.dynamically(batch_size=4, timeout_ms=1.0)(rows)
    async_inference = aio_inference.dynamically(batch_size=4, timeout_ms=1.0)(rows)

    processors: dict[str, Any] = {
        "thread": thread_processor,
        "aio_async": async_double,
        "aio_threaded": aio_threaded,
        "inference": thread_inference,
        "aio_inference": async_inference,
    }
    for name, processor in processors.items():
        register(processor, name, registry=registry)

    async def run_async() -> None:
        assert await async_double([1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
        assert await aio_threaded([1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
        result = await async_inference(x=np.arange(5))
        assert result.tolist() == [0, 2, 4, 6, 8]
        await async_double.ashutdown()

    try:
        assert thread_processor([1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
        assert thread_inference(x=np.arange(5)).tolist() == [0, 2, 4, 6, 8]
        asyncio.run(run_async())
    finally:
        for processor in processors.values():
            processor.shutdown()

    scrape = Scrape(registry)
    assert scrape.processors() == set(processors)
    for name in processors:
        assert scrape.value("batched_items_processed_total", processor=name) == 5, name
        assert scrape.value("batched_batches_total", processor=name, reason="full") == 1, name
        _, size_sum, size_count = scrape.histogram("batched_batch_size", name)
        assert (size_sum, size_count) == (5, 2), name
        for histogram in HISTOGRAMS[1:]:
            scrape.histogram(histogram, name)


def test_openmetrics_exposition(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    processor = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)
    shutdowns.append(processor)
    register(processor, "double", registry=registry)
    processor([1, 2])
    text = generate_openmetrics(registry).decode()
    assert "# UNIT batched_queue_wait_seconds seconds" in text
    assert "# TYPE batched_items_processed counter" in text
    assert 'batched_items_processed_total{processor="double"} 2.0' in text
    assert text.endswith("# EOF\n")


# --------------------------------------------------------------------------------------------
# holding processors weakly


def test_collected_processor_disappears(registry: CollectorRegistry) -> None:
    collector = BatchedCollector(registry=registry)
    kept = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)
    gone = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)
    collector.add(kept, "kept")
    collector.add(gone, "gone")
    gone([1, 2])
    kept([3])
    assert Scrape(registry).processors() == {"kept", "gone"}

    ref = weakref.ref(gone)
    del gone
    gc.collect()
    # The exporter did not keep it alive.
    assert ref() is None
    scrape = Scrape(registry)
    assert scrape.processors() == {"kept"}
    assert 'processor="gone"' not in scrape.text
    assert collector.names() == ["kept"]

    # Its name is free again.
    replacement = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)
    collector.add(replacement, "gone")
    scrape = Scrape(registry)
    assert scrape.value("batched_items_processed_total", processor="gone") == 0
    for processor in (kept, replacement):
        processor.shutdown()


def test_method_processor_goes_with_its_instance(registry: CollectorRegistry) -> None:
    class Embedder:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        @batched.dynamically(batch_size=4, timeout_ms=1.0)
        def embed(self, items: list[int]) -> list[int]:
            return [self.scale * item for item in items]

    first, second = Embedder(2), Embedder(3)
    register(first.embed, "first", registry=registry)
    register(second.embed, "second", registry=registry)
    assert first.embed([1, 2]) == [2, 4]
    assert second.embed(1) == 3
    scrape = Scrape(registry)
    assert scrape.value("batched_items_processed_total", processor="first") == 2
    assert scrape.value("batched_items_processed_total", processor="second") == 1

    instance, processor = weakref.ref(first), weakref.ref(first.embed)
    del first
    gc.collect()
    assert instance() is None
    assert processor() is None
    assert Scrape(registry).processors() == {"second"}

    # The descriptor on the class is not a processor: the error says what to pass.
    with pytest.raises(TypeError, match=r"instance\.method"):
        register(Embedder.embed, "class", registry=registry)
    second.embed.shutdown()


# --------------------------------------------------------------------------------------------
# mistakes


@pytest.mark.parametrize(
    "thing",
    [double, lambda items: items, object(), "embed", batched.dynamically(batch_size=4)],
    ids=["function", "lambda", "object", "string", "decorator"],
)
def test_registering_a_non_processor_is_refused(registry: CollectorRegistry, thing: Any) -> None:
    with pytest.raises(TypeError, match="batched processors"):
        register(thing, "thing", registry=registry)
    collector = BatchedCollector(registry=None)
    with pytest.raises(TypeError, match="batched processors"):
        collector.add(thing, "thing")
    # Nothing was registered on the way.
    assert generate_latest(registry) == b""


def test_duplicate_names(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    one = batched.dynamically(double)
    two = batched.dynamically(double)
    shutdowns += [one, two]
    collector = register(one, "embed", registry=registry)
    # The same processor under the same name again: nothing changes.
    assert register(one, "embed", registry=registry) is collector
    with pytest.raises(ValueError, match="'embed' already belongs to another processor"):
        register(two, "embed", registry=registry)
    with pytest.raises(ValueError, match="already exported as 'embed'"):
        register(one, "other", registry=registry)
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            collector.add(two, bad)  # type: ignore[arg-type]
    assert collector.names() == ["embed"]

    collector.remove("embed")
    assert Scrape(registry).processors() == set()
    with pytest.raises(KeyError, match="embed"):
        collector.remove("embed")
    register(two, "embed", registry=registry)
    two([1])
    assert Scrape(registry).value("batched_items_processed_total", processor="embed") == 1


def test_one_collector_per_registry(registry: CollectorRegistry, shutdowns: list[Any]) -> None:
    collector = BatchedCollector(registry=registry, time_buckets=[0.5], size_buckets=[3])
    with pytest.raises(ValueError, match="already has a BatchedCollector"):
        BatchedCollector(registry=registry)
    processor = batched.dynamically(batch_size=4, timeout_ms=1.0)(double)
    shutdowns.append(processor)
    # register() finds the registry's collector, with its buckets.
    assert register(processor, "double", registry=registry) is collector
    assert collector.time_buckets == (0.5,)
    assert collector.size_buckets == (3,)
    processor([1, 2])
    sizes, _, _ = Scrape(registry).histogram("batched_batch_size", "double")
    assert sizes == [(3.0, 1), (math.inf, 1)]

    # A collector made without a registry is registered by hand, like any other collector.
    other = CollectorRegistry()
    manual = BatchedCollector(registry=None)
    other.register(manual)
    manual.add(processor, "double")
    assert Scrape(other).value("batched_items_processed_total", processor="double") == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_buckets": [0.1, 0.01]}, "strictly ascending"),
        ({"time_buckets": [0.1, 0.1]}, "strictly ascending"),
        ({"time_buckets": [-1.0]}, "at least 0"),
        ({"time_buckets": [math.inf]}, "finite"),
        ({"time_buckets": [math.nan]}, "finite"),
        ({"size_buckets": [4, 2]}, "strictly ascending"),
        ({"size_buckets": [1.5]}, "whole numbers"),
        ({"size_buckets": [-1]}, "whole numbers"),
    ],
)
def test_bad_buckets(registry: CollectorRegistry, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchedCollector(registry=registry, **options)
    # A refused collector is not left registered.
    assert generate_latest(registry) == b""
    BatchedCollector(registry=registry)
