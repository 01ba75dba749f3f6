"""Prometheus metrics for batched processors, read from the processors on every scrape.

This module needs ``prometheus_client`` (``pip install 'batched[prometheus]'``); ``import
batched`` alone never imports it. Register each processor under a name, which becomes the
``processor`` label of its series::

    import batched
    import batched.prometheus
    from prometheus_client import CollectorRegistry, generate_latest

    @batched.dynamically(batch_size=8, timeout_ms=2.0)
    def double(items: list[int]) -> list[int]:
        return [2 * item for item in items]

    registry = CollectorRegistry()  # or leave registry= out for prometheus_client's REGISTRY
    batched.prometheus.register(double, "double", registry=registry)
    double(list(range(20)))
    print(generate_latest(registry).decode())  # batched_items_processed_total{...} 20.0 ...

The processors are held weakly: a processor that is garbage-collected (for a decorated method,
when its instance is) drops out of the metrics, and the exporter never keeps one alive. A
processor that was shut down keeps reporting its final values for as long as it lives.

For bucket bounds of your own, make a registry's collector yourself, before anything is
registered there (``batched.prometheus.register`` then finds it and uses it)::

    custom = CollectorRegistry()
    collector = batched.prometheus.BatchedCollector(
        registry=custom, time_buckets=[0.01, 0.1, 1.0], size_buckets=[1, 8, 64]
    )
    collector.add(double, "double")
    assert batched.prometheus.register(double, "double", registry=custom) is collector
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "batched.prometheus needs the prometheus_client package; install it with "
        "pip install 'batched[prometheus]'",
        name=error.name,
    ) from error

from batched._backend import Managed
from batched._core import BatchStats
from batched._decorate import PerInstance

__all__ = [
    "DEFAULT_SIZE_BUCKETS",
    "DEFAULT_TIME_BUCKETS",
    "BatchedCollector",
    "Processor",
    "register",
]

Processor: TypeAlias = Managed
"""Any processor of the package: what the four ``dynamically`` decorators make."""

DEFAULT_TIME_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds, in seconds, of the queue wait and batch time histograms' buckets."""

DEFAULT_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds, in items, of the batch size histogram's buckets."""

_LABEL = "processor"


def _time_bounds(bounds: Iterable[float]) -> list[float]:
    values = [float(bound) for bound in bounds]
    for value in values:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"time_buckets must be finite numbers of seconds, at least 0, got {value!r} "
                "(the +Inf bucket is always there)"
            )
    _check_ascending("time_buckets", values)
    return values


def _size_bounds(bounds: Iterable[int]) -> list[int]:
    values = list(bounds)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"size_buckets must be whole numbers of items, got {value!r}")
    _check_ascending("size_buckets", values)
    return values


def _check_ascending(what: str, values: Sequence[float]) -> None:
    for low, high in itertools.pairwise(values):
        if not low < high:
            raise ValueError(f"{what} must be strictly ascending, got {list(values)!r}")


def _check_processor(processor: object) -> None:
    if isinstance(processor, Managed):
        return
    if isinstance(processor, PerInstance):
        raise TypeError(
            f"{getattr(processor, '__qualname__', 'this')} is a batched method accessed on its "
            "class; each instance has its own processor: register instance.method instead"
        )
    raise TypeError(
        "batched.prometheus exports batched processors (what batched.dynamically, "
        "batched.aio.dynamically and the inference decorators return), got "
        f"{type(processor).__name__} {processor!r}"
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a processor's name must be a non-empty string, got {name!r}")
    return name


def _bucket_label(bound: float) -> str:
    # As prometheus_client writes its own ``le`` labels: 1.0, 0.005, 1e-05.
    return repr(float(bound))


# (BatchStats field, metric name after "batched_items_", help text)
_ITEM_COUNTERS = (
    (
        "total_processed",
        "processed",
        "Items that went through the batch function, those whose batch raised included.",
    ),
    ("items_failed", "failed", "Items whose batch raised: their callers got the exception."),
    (
        "items_timed_out",
        "timed_out",
        "Items whose caller's timeout passed before their result came.",
    ),
    (
        "items_cancelled",
        "cancelled",
        "Items whose caller was cancelled or interrupted before their result came.",
    ),
    (
        "items_rejected",
        "rejected",
        "Items the queue refused: full (max_queue_size), or over max_batch_tokens.",
    ),
)


class _Families:
    """One scrape's metric families, with a ``processor`` label."""

    def __init__(self) -> None:
        labels = [_LABEL]
        self.queue_length = GaugeMetricFamily(
            "batched_queue_length",
            "Items waiting in the processor's queue for a batch.",
            labels=labels,
        )
        # The item counters, each read from the BatchStats field it is keyed by.
        self.items = {
            stat: CounterMetricFamily(f"batched_items_{metric}", help_text, labels=labels)
            for stat, metric, help_text in _ITEM_COUNTERS
        }
        self.batches = CounterMetricFamily(
            "batched_batches",
            "Batches dispatched, by why they left: full (batch_size items waited), deadline "
            "(the oldest item waited timeout_ms), drain (a draining shutdown), or under "
            'timeout_ms="auto" idle (sparse traffic) and adaptive (waiting stopped paying).',
            labels=[_LABEL, "reason"],
        )
        self.padding = GaugeMetricFamily(
            "batched_padding_ratio",
            "Share of the padded positions that held padding, over the batches that the "
            "inference flavours padded (0 to 1).",
            labels=labels,
        )
        self.batch_size = HistogramMetricFamily(
            "batched_batch_size",
            "Items per batch, observed when the batch finished.",
            labels=labels,
        )
        self.queue_wait = HistogramMetricFamily(
            "batched_queue_wait_seconds",
            "Seconds from an item's arrival to its batch's dispatch.",
            labels=labels,
            unit="seconds",
        )
        self.batch_time = HistogramMetricFamily(
            "batched_batch_time_seconds",
            "Seconds from a batch's dispatch until its results were handed back.",
            labels=labels,
            unit="seconds",
        )

    def all(self) -> list[Metric]:
        return [
            self.queue_length,
            *self.items.values(),
            self.batches,
            self.padding,
            self.batch_size,
            self.queue_wait,
            self.batch_time,
        ]

    def add(
        self,
        name: str,
        stats: BatchStats,
        histograms: dict[str, Any],
        time_bounds: Sequence[float],
        size_bounds: Sequence[int],
    ) -> None:
        labels = [name]
        self.queue_length.add_metric(labels, stats.queue_size)
        for stat, counter in self.items.items():
            counter.add_metric(labels, getattr(stats, stat))
        for reason, count in stats.batches_by_reason.items():
            self.batches.add_metric([name, reason], count)
        self.padding.add_metric(labels, stats.padded_fraction)
        for family, key, bounds in (
            (self.batch_size, "batch_size", size_bounds),
            (self.queue_wait, "queue_wait_seconds", time_bounds),
            (self.batch_time, "batch_time_seconds", time_bounds),
        ):
            counts, total, count = histograms[key]
            buckets = [
                (_bucket_label(bound), float(cumulative))
                for bound, cumulative in zip(bounds, counts, strict=True)
            ]
            buckets.append(("+Inf", float(count)))
            family.add_metric(labels, buckets, float(total))


class BatchedCollector:
    """A prometheus_client collector that reads named batched processors on every scrape.

    ``registry`` (prometheus_client's ``REGISTRY`` by default) is where the collector registers
    itself; pass ``None`` to register it yourself. A registry holds at most one
    ``BatchedCollector`` made this way, and :func:`register` reuses it. ``time_buckets``
    (seconds) and ``size_buckets`` (items) are the upper bounds of the histograms' buckets,
    ascending; the ``+Inf`` bucket is always added.

    Example::

        from prometheus_client import CollectorRegistry, generate_latest
        import batched
        from batched.prometheus import BatchedCollector

        @batched.dynamically(batch_size=4)
        def square(items: list[int]) -> list[int]:
            return [item * item for item in items]

        registry = CollectorRegistry()
        collector = BatchedCollector(registry=registry, size_buckets=[1, 2, 4])
        collector.add(square, "square")
        square([1, 2, 3])
        assert b'batched_items_processed_total{processor="square"} 3.0' in (
            generate_latest(registry)
        )
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        time_buckets: Iterable[float] = DEFAULT_TIME_BUCKETS,
        size_buckets: Iterable[int] = DEFAULT_SIZE_BUCKETS,
    ) -> None:
        self._time_bounds = _time_bounds(time_buckets)
        self._size_bounds = _size_bounds(size_buckets)
        self._lock = threading.Lock()
        self._processors: weakref.WeakValueDictionary[str, Processor] = (
            weakref.WeakValueDictionary()
        )
        if registry is not None:
            _attach(self, registry)

    @property
    def time_buckets(self) -> tuple[float, ...]:
        """The upper bounds, in seconds, of the time histograms' buckets."""
        return tuple(self._time_bounds)

    @property
    def size_buckets(self) -> tuple[int, ...]:
        """The upper bounds, in items, of the batch size histogram's buckets."""
        return tuple(self._size_bounds)

    def add(self, processor: Processor, name: str) -> None:
        """Exports ``processor`` with the label ``processor=name`` while it lives.

        Raises ``TypeError`` for anything but a batched processor and ``ValueError`` when
        ``name`` already belongs to another live processor, or ``processor`` already has a
        name here. Adding a processor again under its own name does nothing.
        """
        _check_processor(processor)
        name = _check_name(name)
        with self._lock:
            current = self._processors.get(name)
            if current is processor:
                return
            if current is not None:
                raise ValueError(
                    f"the name {name!r} already belongs to another processor, {current!r}; "
                    "give each processor its own name"
                )
            for other_name, other in self._processors.items():
                if other is processor:
                    raise ValueError(
                        f"this processor is already exported as {other_name!r}; one name each"
                    )
            self._processors[name] = processor

    def remove(self, name: str) -> None:
        """Stops exporting the processor named ``name`` (``KeyError`` if there is none)."""
        with self._lock:
            if self._processors.pop(name, None) is None:
                raise KeyError(f"no live processor is exported as {name!r}")

    def names(self) -> list[str]:
        """The names of the live processors exported, sorted."""
        with self._lock:
            return sorted(self._processors.keys())

    def describe(self) -> list[Metric]:
        """The metric families without samples, so that a registry can check their names."""
        return _Families().all()

    def collect(self) -> list[Metric]:
        """Reads every live processor: the metric families of one scrape."""
        with self._lock:
            processors = sorted(self._processors.items())
        families = _Families()
        for name, processor in processors:
            stats = processor.stats
            histograms = processor.histograms(self._time_bounds, self._size_bounds)
            families.add(name, stats, histograms, self._time_bounds, self._size_bounds)
        return families.all()

    def __repr__(self) -> str:
        return f"<BatchedCollector {self.names()!r}>"


# The collector attached to each registry, for register(); weak so that registries can go.
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, BatchedCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.RLock()


def _attach(collector: BatchedCollector, registry: CollectorRegistry) -> None:
    with _collectors_lock:
        if registry in _collectors:
            raise ValueError(
                "this registry already has a BatchedCollector; add processors to that one "
                "(batched.prometheus.register finds it)"
            )
        registry.register(collector)
        _collectors[registry] = collector


def register(
    processor: Processor, name: str, *, registry: CollectorRegistry = REGISTRY
) -> BatchedCollector:
    """Exports ``processor`` under the label ``processor=name`` in ``registry``.

    The registry's :class:`BatchedCollector` (made with the default buckets if there is none
    yet) holds the processor weakly; it is returned, so that ``.remove(name)`` can stop the
    export. Raises ``TypeError`` for anything but a batched processor (on a decorated method,
    pass ``instance.method``) and ``ValueError`` for a name already in use.

    Example::

        from prometheus_client import CollectorRegistry, generate_latest
        import batched
        import batched.prometheus

        @batched.dynamically
        def lengths(items: list[str]) -> list[int]:
            return [len(item) for item in items]

        registry = CollectorRegistry()
        batched.prometheus.register(lengths, "lengths", registry=registry)
        lengths(["a", "bc"])
        print(generate_latest(registry).decode())
    """
    _check_processor(processor)
    _check_name(name)
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = BatchedCollector(registry=registry)
    collector.add(processor, name)
    return collector
