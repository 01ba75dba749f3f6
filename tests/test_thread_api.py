"""The thread flavour: ``batched.dynamically``, ``BatchProcessor``, ``acall`` and the stats.

Tests that need the worker to be busy block it inside the user function (on a threading.Event)
and wait for the queue to hold what they submitted, so no assertion depends on timing; every
wait has a generous upper bound so that a bug shows up as a failure rather than a hang.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import math
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import batched
import pytest
from conftest import Gate, await_until, run_python, wait_until

pytestmark = pytest.mark.timeout(60)

# An upper bound for anything that should happen "soon"; never reached unless something is wrong.
WAIT = 10.0
BLOCK = "block"


def result_of(x: Any) -> tuple[str, Any]:
    return ("r", x)


class Boom(Exception):
    pass


class Recorder(Gate):
    """A batch function that records every batch it receives and returns ``result_of`` each
    item. A batch holding ``BLOCK`` is held at the gate, keeping the worker busy; with
    ``boom``, a batch holding ``"bad"`` raises ``Boom(boom)``."""

    def __init__(self, boom: str | None = None) -> None:
        super().__init__(WAIT)
        self.batches: list[list[Any]] = []
        self.boom = boom

    def __call__(self, items: list[Any]) -> list[Any]:
        assert isinstance(items, list)
        self.batches.append(list(items))
        if any(isinstance(item, str) and item == BLOCK for item in items):
            self.hold()
        if self.boom is not None and "bad" in items:
            raise Boom(self.boom)
        return [result_of(item) for item in items]

    @property
    def seen(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]

    def block_worker(self, processor: batched.BatchProcessor[Any, Any]) -> Caller:
        """Submits ``BLOCK`` from a thread and returns once the worker is stuck in it."""
        blocker = Caller(processor, BLOCK)
        assert self.entered.wait(WAIT), "the blocking batch never started"
        return blocker

    async def ablock_worker(
        self, processor: batched.BatchProcessor[Any, Any]
    ) -> asyncio.Future[Any]:
        """Submits ``BLOCK`` with ``acall``; returns its task once the worker is stuck in it."""
        blocker = asyncio.ensure_future(processor.acall(BLOCK))
        await await_until(self.entered.is_set, "the blocking batch", WAIT)
        return blocker


class Caller(threading.Thread):
    """Calls ``func(*args, **kwargs)`` on its own thread and keeps the result or exception."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.func, self.args, self.kwargs = func, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.func(*self.args, **self.kwargs)
        except BaseException as error:
            self.error = error

    def outcome(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), "the call never returned"
        if self.error is not None:
            raise self.error
        return self.result

    def failure(self) -> BaseException:
        self.join(WAIT)
        assert not self.is_alive(), "the call never returned"
        assert self.error is not None, f"the call returned {self.result!r} instead of failing"
        return self.error


def submit_in_order(
    processor: batched.BatchProcessor[Any, Any], calls: list[tuple[Any, dict[str, Any]]]
) -> list[Caller]:
    """Starts one thread per call, each only once the previous call is queued, so the queue
    receives them in this order. The worker must be blocked."""
    callers = []
    expected = processor.stats.queue_size
    for item, kwargs in calls:
        callers.append(Caller(processor, item, **kwargs))
        expected += len(item) if isinstance(item, list) else 1
        size = expected
        wait_until(lambda size=size: processor.stats.queue_size == size, f"{size} queued")
    return callers


@pytest.fixture
def make_processor() -> Iterator[Callable[..., batched.BatchProcessor[Any, Any]]]:
    made: list[batched.BatchProcessor[Any, Any]] = []

    def make(func: Callable[..., Any], **options: Any) -> batched.BatchProcessor[Any, Any]:
        processor = batched.BatchProcessor(func, **options)
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.shutdown(drain=False)


# --- basic calls ---------------------------------------------------------------------------


def test_bare_decorator_single_list_and_empty_calls() -> None:
    received: list[list[Any]] = []

    @batched.dynamically
    def double(xs: list[int]) -> list[int]:
        received.append(list(xs))
        return [x * 2 for x in xs]

    try:
        assert isinstance(double, batched.BatchProcessor)
        assert double.__name__ == "double"
        assert double(21) == 42
        assert double([1, 2, 3]) == [2, 4, 6]
        assert double([]) == []
        assert double([5]) == [10]
        assert [] not in received
        assert sorted(x for batch in received for x in batch) == [1, 2, 3, 5, 21]
    finally:
        double.shutdown()


def test_decorator_with_options_returns_a_processor() -> None:
    @batched.dynamically(batch_size=3, timeout_ms=0.5, small_batch_threshold=1)
    def ident(xs: list[Any]) -> list[Any]:
        assert len(xs) <= 3
        return xs

    try:
        assert isinstance(ident, batched.BatchProcessor)
        assert ident(list(range(10))) == list(range(10))
        assert ident("x") == "x"
    finally:
        ident.shutdown()


def test_only_a_list_means_many_items(make_processor: Any) -> None:
    np = pytest.importorskip("numpy")
    rec = Recorder()
    p = make_processor(rec, batch_size=8, timeout_ms=1)
    assert p((1, 2)) == result_of((1, 2))
    assert p("abc") == result_of("abc")
    array = np.arange(4)
    result = p(array)
    assert result[0] == "r"
    assert result[1] is array
    assert p([(1, 2), "abc"]) == [result_of((1, 2)), result_of("abc")]
    assert rec.batches[0] == [(1, 2)]
    assert rec.batches[1] == ["abc"]
    assert len(rec.batches[2]) == 1
    assert rec.batches[2][0] is array


# --- 1. exact results under concurrency ------------------------------------------------------


def test_many_threads_each_get_their_own_results_nothing_lost_or_duplicated(
    make_processor: Any,
) -> None:
    seen: list[int] = []
    lock = threading.Lock()
    batch_size = 16

    def square(xs: list[int]) -> list[tuple[int, int]]:
        assert 1 <= len(xs) <= batch_size
        with lock:
            seen.extend(xs)
        return [(x, x * x) for x in xs]

    p = make_processor(square, batch_size=batch_size, timeout_ms=2)
    # Some list calls are longer than a batch, so their items spread over several batches.
    n_threads, singles, lists = 64, 40, 4
    expected_count = n_threads * singles + sum(
        3 + (t + i) % 35 for t in range(n_threads) for i in range(0, singles, singles // lists)
    )
    barrier = threading.Barrier(n_threads)
    submitted: list[list[int]] = [[] for _ in range(n_threads)]
    wrong: list[str] = []

    def work(t: int) -> None:
        barrier.wait(WAIT)
        base = t * 100_000
        for i in range(singles):
            value = base + i
            submitted[t].append(value)
            got = p(value)
            if got != (value, value * value):
                wrong.append(f"thread {t}: {value} -> {got!r}")
            if i % (singles // lists) == 0:
                values = [base + 50_000 + i * 100 + j for j in range(3 + (t + i) % 35)]
                submitted[t].extend(values)
                got = p(values)
                if got != [(v, v * v) for v in values]:
                    wrong.append(f"thread {t}: {values} -> {got!r}")

    callers = [Caller(work, t) for t in range(n_threads)]
    for caller in callers:
        caller.outcome()
    assert wrong == []
    everything = [v for values in submitted for v in values]
    assert len(everything) == expected_count
    assert len(set(everything)) == len(everything)
    assert sorted(seen) == sorted(everything)
    stats = p.stats
    assert stats.total_processed == len(everything)
    assert stats.queue_size == 0


def test_threads_and_event_loops_share_one_processor(make_processor: Any) -> None:
    p = make_processor(lambda xs: [-x for x in xs], batch_size=8, timeout_ms=1)

    async def tasks(offset: int) -> list[int]:
        return await asyncio.gather(*(p.acall(offset + i) for i in range(50)))

    loops = [Caller(asyncio.run, tasks(1000 * k)) for k in range(1, 4)]
    threads = [Caller(lambda k=k: [p(-k * 7 - i) for i in range(20)]) for k in range(4)]
    for k, loop in enumerate(loops, start=1):
        assert loop.outcome() == [-(1000 * k + i) for i in range(50)]
    for k, thread in enumerate(threads):
        assert thread.outcome() == [k * 7 + i for i in range(20)]


# --- 2. methods ---------------------------------------------------------------------------


def _call_from_threads(processor: Any, values: list[int]) -> list[Any]:
    callers = [Caller(processor, v) for v in values]
    return [caller.outcome() for caller in callers]


def test_a_list_call_that_fills_the_batch_sends_it_without_waiting(make_processor: Any) -> None:
    # The worker waits for three more items after the first; they come as one list call. A
    # deadline of a minute shows whether the full batch left at once.
    f = make_processor(lambda xs: [x * 2 for x in xs], batch_size=4, timeout_ms=60_000)
    first = Caller(f, 1)
    wait_until(lambda: f.stats.queue_size == 1, "the first item queued")
    started = time.monotonic()
    assert f([2, 3, 4]) == [4, 6, 8]
    assert first.outcome() == 2
    assert time.monotonic() - started < WAIT
    assert f.stats.total_batches == 1


def test_method_processors_are_per_instance_and_do_not_keep_it_alive() -> None:
    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor
            self.received: list[int] = []

        @batched.dynamically(batch_size=8, timeout_ms=1)
        def scale(self, xs: list[int]) -> list[int]:
            self.received.extend(xs)
            return [x * self.factor for x in xs]

    a, b = Scaler(2), Scaler(10)
    assert a.scale is a.scale
    assert b.scale is b.scale
    assert a.scale is not b.scale
    assert isinstance(a.scale, batched.BatchProcessor)
    assert a.scale(3) == 6
    assert b.scale(3) == 30
    assert a.scale([1, 2, 3]) == [2, 4, 6]
    assert _call_from_threads(a.scale, list(range(20))) == [2 * v for v in range(20)]
    assert _call_from_threads(b.scale, list(range(20))) == [10 * v for v in range(20)]
    assert sorted(a.received) == sorted([3, 1, 2, 3, *range(20)])
    assert sorted(b.received) == sorted([3, *range(20)])

    name = f"batched:{Scaler.scale.__qualname__}"
    assert name.endswith(".Scaler.scale")

    def workers() -> int:
        return sum(1 for thread in threading.enumerate() if thread.name == name)

    assert workers() == 2
    ref_a = weakref.ref(a)
    del a
    gc.collect()
    assert ref_a() is None
    wait_until(lambda: workers() == 1, "the collected instance's worker to stop")
    assert b.scale(4) == 40
    ref_b = weakref.ref(b)
    del b
    gc.collect()
    assert ref_b() is None
    wait_until(lambda: workers() == 0, "every worker to stop")


def test_a_method_of_a_temporary_instance_runs_and_then_lets_it_go() -> None:
    import batched.aio
    import batched.aio.inference
    import batched.inference
    import numpy as np

    class Threads:
        @batched.dynamically(batch_size=4, timeout_ms=1)
        def double(self, xs: list[int]) -> list[int]:
            return [x * 2 for x in xs]

    class Tasks:
        @batched.aio.dynamically(batch_size=4, timeout_ms=1)
        async def triple(self, xs: list[int]) -> list[int]:
            return [x * 3 for x in xs]

        @batched.aio.dynamically(batch_size=4, timeout_ms=1)
        def quadruple(self, xs: list[int]) -> list[int]:
            return [x * 4 for x in xs]

    class Model:
        @batched.inference.dynamically(batch_size=4, timeout_ms=1)
        def total(self, features: dict[str, Any]) -> Any:
            return features["x"].sum(axis=1, keepdims=True)

        @batched.aio.inference.dynamically(batch_size=4, timeout_ms=1)
        async def atotal(self, features: dict[str, Any]) -> Any:
            return features["x"].sum(axis=1, keepdims=True)

    # Each instance is referenced only by the expression: collected as soon as it is fetched
    # from, unless its processor keeps it for the call. (Outside `assert`, whose rewriting
    # would keep the instance in a temporary.)
    got = [
        Threads().double(1),
        asyncio.run(Threads().double.acall([2, 3])),
        asyncio.run(Tasks().triple(1)),
        asyncio.run(Tasks().quadruple(1)),
        Model().total({"x": np.ones((1, 3))}).tolist(),
        asyncio.run(Model().total.acall(x=np.ones((1, 2)))).tolist(),
        asyncio.run(Model().atotal(x=np.ones((1, 5)))).tolist(),
    ]
    assert got == [2, [4, 6], 3, 4, [[3.0]], [[2.0]], [[5.0]]]

    # Once its call returned, the processor holds the instance no more: it goes at once.
    kept = Threads()
    assert kept.double(5) == 10
    assert asyncio.run(kept.double.acall(6)) == 12
    gone = weakref.ref(kept)
    del kept
    assert gone() is None

    # Fetched and never called, the processor pins its instance in a cycle the collector sees.
    idle = Threads()
    fetched, idle_gone = weakref.ref(idle.double), weakref.ref(idle)
    del idle
    gc.collect()
    assert idle_gone() is None
    assert fetched() is None

    # A processor kept past its instance's collection refuses calls, and its worker stops.
    orphan = Threads().double
    assert orphan(7) == 14  # the fetch pinned the instance; this call was its last holder
    with pytest.raises(batched.ProcessorClosedError, match="was collected"):
        orphan(8)
    name = f"batched:{Threads.double.__qualname__}"
    del orphan
    gc.collect()
    wait_until(
        lambda: not any(thread.name == name for thread in threading.enumerate()),
        "every worker of a collected instance to stop",
    )


class Tagger:
    """Module level, so that pickle can find it."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    @batched.dynamically(batch_size=4, timeout_ms=1)
    def tagged(self, xs: list[int]) -> list[str]:
        return [f"{self.tag}:{x}" for x in xs]


def test_copies_and_unpickled_instances_get_processors_of_their_own() -> None:
    import copy
    import pickle

    original = Tagger("original")
    assert original.tagged(1) == "original:1"  # its processor is now in its __dict__
    shallow = copy.copy(original)
    shallow.tag = "shallow"
    deep = copy.deepcopy(original)
    deep.tag = "deep"
    revived = pickle.loads(pickle.dumps(original))
    revived.tag = "revived"
    for instance in (shallow, deep, revived):
        assert instance.tagged is not original.tagged
        assert instance.tagged(2) == f"{instance.tag}:2"
    assert original.tagged(3) == "original:3"


def test_static_methods_batch_like_functions_and_classmethods_are_refused() -> None:
    class Tools:
        @batched.dynamically(batch_size=4, timeout_ms=1)
        @staticmethod
        def increment(xs: list[int]) -> list[int]:
            return [x + 1 for x in xs]

    try:
        assert Tools.increment(1) == 2
        assert Tools().increment([1, 2]) == [2, 3]
        assert Tools.increment is Tools().increment  # one processor, no instance involved
    finally:
        Tools.increment.shutdown()

    with pytest.raises(TypeError, match="cannot decorate a classmethod"):

        class Built:
            @batched.dynamically
            @classmethod
            def make(cls, xs: list[int]) -> list[int]:
                return xs

    class Late:
        @classmethod
        @batched.dynamically
        def make(cls, xs: list[int]) -> list[int]:
            return xs

        @staticmethod
        @batched.dynamically
        def other(xs: list[int]) -> list[int]:
            return xs

    with pytest.raises(TypeError, match="cannot be a classmethod"):
        Late.make(1)  # type: ignore[operator]
    with pytest.raises(TypeError, match="put @staticmethod below the batched decorator"):
        Late().other(1)


# --- 3. errors and bad arguments --------------------------------------------------------------


def test_user_exception_reaches_every_caller_of_the_batch(make_processor: Any) -> None:
    rec = Recorder(boom="bad batch")
    p = make_processor(rec, batch_size=8, timeout_ms=1)
    blocker = rec.block_worker(p)
    callers = submit_in_order(p, [("a", {}), ("bad", {}), ("c", {}), (["d", "e"], {})])
    rec.release()
    assert blocker.outcome() == result_of(BLOCK)
    for caller in callers:
        error = caller.failure()
        assert type(error) is Boom
        assert str(error) == "bad batch"
    assert rec.batches[1] == ["a", "bad", "c", "d", "e"]
    # The processor keeps serving later batches.
    assert p("z") == result_of("z")
    with pytest.raises(Boom, match="bad batch"):
        p(["y", "bad"])
    assert p(["w", "v"]) == [result_of("w"), result_of("v")]


def test_wrong_number_of_results_is_a_value_error_naming_both_lengths(
    make_processor: Any,
) -> None:
    p = make_processor(lambda xs: xs[:-1] if "short" in xs else [*xs, 0], timeout_ms=1)
    with pytest.raises(ValueError, match=r"\b2\b.*\b3\b") as info:
        p(["short", 1, 2])
    assert "returned 2 results for a batch of 3 items" in str(info.value)
    with pytest.raises(ValueError, match=r"\b4\b.*\b3\b"):
        p([1, 2, 3])
    with pytest.raises(ValueError, match=r"\b0\b.*\b1\b"):
        p("short")


class _RowsByPosition:
    """Neither list nor tuple, but a sequence: ``__len__`` and ``__getitem__`` by position."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Any:
        return self._rows[index]


@pytest.mark.parametrize(
    ("output", "named"),
    [
        pytest.param(lambda xs: 42, "int", id="int"),
        pytest.param(lambda xs: None, "NoneType", id="none"),
        pytest.param(lambda xs: (x for x in xs), "generator", id="generator"),
        pytest.param(lambda xs: "abc", "str", id="str"),
        pytest.param(lambda xs: b"abc", "bytes", id="bytes"),
        pytest.param(lambda xs: dict(enumerate(xs)), "dict", id="dict"),
        pytest.param(
            lambda xs: types.MappingProxyType(dict(enumerate(xs))), "mappingproxy", id="mapping"
        ),
        pytest.param(lambda xs: set(range(len(xs))), "set", id="set"),
        pytest.param(lambda xs: frozenset(range(len(xs))), "frozenset", id="frozenset"),
        pytest.param(lambda xs: dict(enumerate(xs)).values(), "dict_values", id="dict-values"),
        pytest.param(lambda xs: iter(xs), "list_iterator", id="iterator"),
    ],
)
def test_output_that_is_not_a_sequence_of_results_is_a_type_error_naming_it(
    make_processor: Any, output: Callable[[list[Any]], Any], named: str
) -> None:
    served: list[list[Any]] = []

    def func(xs: list[Any]) -> Any:
        served.append(xs)
        return output(xs) if "bad" in xs else xs

    p = make_processor(func, batch_size=8, timeout_ms=1)
    # Three items, so an output of length 3 would match the batch length.
    with pytest.raises(TypeError, match=rf"returned a {named} \(.*expected|{named} .*3 results"):
        p(["bad", "x", "y"])
    with pytest.raises(TypeError, match="one per item"):
        p("bad")
    assert p(["fine", "ok"]) == ["fine", "ok"]
    assert len(served) == 3


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(tuple, id="tuple"),
        pytest.param(collections.deque, id="deque"),
        pytest.param(_RowsByPosition, id="custom"),
    ],
)
def test_other_sequences_deliver_their_rows_in_order(
    make_processor: Any, output: Callable[[list[Any]], Any]
) -> None:
    p = make_processor(lambda xs: output([x * 2 for x in xs]), timeout_ms=1)
    assert p([1, 2, 3]) == [2, 4, 6]
    ranged = make_processor(lambda xs: range(10, 10 + len(xs)), timeout_ms=1)
    assert ranged([7, 8]) == [10, 11]


def _func(xs: list[Any]) -> list[Any]:
    return xs


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"batch_size": 0}, ValueError, id="batch_size=0"),
        pytest.param({"batch_size": -3}, ValueError, id="batch_size<0"),
        pytest.param({"timeout_ms": -1.0}, ValueError, id="timeout_ms<0"),
        pytest.param({"timeout_ms": math.nan}, ValueError, id="timeout_ms=nan"),
        pytest.param({"timeout_ms": math.inf}, ValueError, id="timeout_ms=inf"),
        pytest.param({"small_batch_threshold": -1}, ValueError, id="threshold<0"),
        pytest.param({"batch_size": 2.5}, TypeError, id="batch_size=float"),
        pytest.param({"batch_size": "4"}, TypeError, id="batch_size=str"),
        pytest.param({"batch_size": True}, TypeError, id="batch_size=bool"),
        pytest.param({"timeout_ms": "5"}, TypeError, id="timeout_ms=str"),
        pytest.param({"small_batch_threshold": 1.5}, TypeError, id="threshold=float"),
        pytest.param({"sort_by_length": "no"}, TypeError, id="sort_by_length=str"),
    ],
)
def test_bad_options_fail_at_decoration_time(options: dict[str, Any], error: type) -> None:
    name = next(iter(options))
    with pytest.raises(error, match=name):
        batched.dynamically(**options)
    with pytest.raises(error, match=name):
        batched.BatchProcessor(_func, **options)


def test_bad_options_on_a_method_fail_when_the_class_is_defined() -> None:
    def define() -> type:
        class Model:
            @batched.dynamically(batch_size=0)
            def predict(self, xs: list[Any]) -> list[Any]:
                return xs

        return Model

    with pytest.raises(ValueError, match="batch_size"):
        define()


@pytest.mark.parametrize(
    ("length", "error", "message"),
    [
        (-1, ValueError, "cannot be negative, got -1"),
        ("7", TypeError, "must be a whole number, got '7'"),
        (2.5, TypeError, "must be a whole number, got 2.5"),
    ],
)
def test_a_bad_length_from_length_fn_is_a_clear_error_at_call_time(
    make_processor: Any, length: Any, error: type, message: str
) -> None:
    f = make_processor(lambda xs: xs, sort_by_length=True, length_fn=lambda item: length)
    with pytest.raises(error, match=message):
        f("a")
    with pytest.raises(error, match=message):
        f(["a", "b"])
    with pytest.raises(error, match=message):
        asyncio.run(f.acall("a"))
    assert f.stats.queue_size == 0


def test_a_timeout_that_is_not_a_number_is_refused_before_queueing(make_processor: Any) -> None:
    import batched.aio

    f = make_processor(lambda xs: xs)
    g = batched.aio.dynamically(lambda xs: xs)
    try:
        for call in (lambda: f.acall(1, timeout="1"), lambda: g(1, timeout="1")):
            with pytest.raises(TypeError, match="timeout must be a number of seconds"):
                asyncio.run(call())  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            f(1, timeout="1")  # type: ignore[arg-type]
    finally:
        g.shutdown()
    assert f.stats.total_processed == 0


def test_non_callable_is_a_type_error_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="callable"):
        batched.dynamically(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="callable"):
        batched.dynamically(batch_size=4)("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        batched.BatchProcessor(None)  # type: ignore[arg-type]


def test_error_classes() -> None:
    assert issubclass(batched.ProcessorClosedError, batched.BatchedError)
    assert issubclass(batched.BatchedError, Exception)


# --- 4. order, splitting, priority, small calls before bulk ---------------------------------


def test_list_call_is_split_into_batches_and_comes_back_in_order(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=4, timeout_ms=1)
    items = list(range(10))
    assert p(items) == [result_of(i) for i in items]
    assert rec.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_single_calls_keep_submission_order(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=4, timeout_ms=1)
    blocker = rec.block_worker(p)
    items = [f"item{i}" for i in range(7)]
    callers = submit_in_order(p, [(item, {}) for item in items])
    rec.release()
    assert blocker.outcome() == result_of(BLOCK)
    assert [caller.outcome() for caller in callers] == [result_of(i) for i in items]
    assert rec.batches[1:] == [items[:4], items[4:]]


def test_lower_priority_number_runs_first(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=1, timeout_ms=1)
    blocker = rec.block_worker(p)
    calls = [("low", {"priority": 5}), ("high", {"priority": 0}), ("urgent", {"priority": -3})]
    callers = submit_in_order(p, calls)
    rec.release()
    assert blocker.outcome() == result_of(BLOCK)
    assert [caller.outcome() for caller in callers] == [
        result_of("low"),
        result_of("high"),
        result_of("urgent"),
    ]
    assert rec.seen == [BLOCK, "urgent", "high", "low"]


def test_priority_orders_items_within_one_batch(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=8, timeout_ms=1)
    blocker = rec.block_worker(p)
    callers = submit_in_order(p, [("later", {"priority": 5}), ("first", {"priority": 0})])
    rec.release()
    blocker.outcome()
    assert [caller.outcome() for caller in callers] == [result_of("later"), result_of("first")]
    assert rec.batches[1:] == [["first", "later"]]


def test_small_calls_go_before_bulk_but_bulk_keeps_progressing(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=4, timeout_ms=1, small_batch_threshold=2)
    bulk = [BLOCK, *range(1, 100)]
    bulk_caller = Caller(p, bulk)
    assert rec.entered.wait(WAIT)
    assert rec.batches == [[BLOCK, 1, 2, 3]]
    singles = [f"s{i}" for i in range(5)]
    single_callers = submit_in_order(p, [(s, {}) for s in singles])
    rec.release()
    assert bulk_caller.outcome() == [result_of(x) for x in bulk]
    assert [caller.outcome() for caller in single_callers] == [result_of(s) for s in singles]

    batches = rec.batches[1:]
    assert all(len(batch) <= 4 for batch in batches)
    assert batches[0][0] == "s0", "a waiting single item should lead the next batch"
    # Singles come out in submission order, bulk items in input order.
    assert [x for x in rec.seen if isinstance(x, str) and x != BLOCK] == singles
    assert [x for x in rec.seen if isinstance(x, int)] == list(range(1, 100))
    last = max(i for i, batch in enumerate(batches) if any(isinstance(x, str) for x in batch))
    # Singles go ahead of bulk: all of them within the first few batches, each batch
    # putting its singles before its bulk items...
    assert last < len(singles)
    for batch in batches[: last + 1]:
        kinds = ["s" if isinstance(x, str) else "b" for x in batch]
        assert kinds == sorted(kinds, reverse=True), batch
        # ...while bulk still progresses in every batch where both were waiting.
        assert "b" in kinds, batch


# --- timeouts and cancellation --------------------------------------------------------------


def test_call_timeout_raises_and_its_items_never_run(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=8, timeout_ms=1)
    assert p("quick", timeout=WAIT) == result_of("quick")
    blocker = rec.block_worker(p)
    with pytest.raises(TimeoutError):
        p("late", timeout=0.2)
    with pytest.raises(TimeoutError):
        p(["late1", "late2"], timeout=0.1)
    rec.release()
    assert blocker.outcome() == result_of(BLOCK)
    assert p("after") == result_of("after")
    assert rec.seen == ["quick", BLOCK, "after"]
    stats = p.stats
    assert stats.queue_size == 0
    assert stats.total_processed == 3


TIMEOUT_EDGES = [
    pytest.param(-1.0, TimeoutError, id="negative"),
    pytest.param(math.nan, TimeoutError, id="nan"),
    pytest.param(math.inf, None, id="inf"),
    pytest.param(1e30, None, id="huge"),
]


@pytest.mark.parametrize(("timeout", "error"), TIMEOUT_EDGES)
def test_acall_timeout_edge_values(
    make_processor: Any, timeout: float, error: type[BaseException] | None
) -> None:
    p = make_processor(lambda xs: xs, timeout_ms=1)

    async def call() -> Any:
        return await p.acall("x", timeout=timeout)

    if error is None:
        assert asyncio.run(call()) == "x"
    else:
        with pytest.raises(error):
            asyncio.run(call())


@pytest.mark.parametrize(("timeout", "error"), TIMEOUT_EDGES)
def test_call_timeout_edge_values_behave_like_acall(
    make_processor: Any, timeout: float, error: type[BaseException] | None
) -> None:
    p = make_processor(lambda xs: xs, timeout_ms=1)
    if error is None:
        assert p("x", timeout=timeout) == "x"
    else:
        with pytest.raises(error):
            p("x", timeout=timeout)


def test_acall_from_two_successive_event_loops(make_processor: Any) -> None:
    p = make_processor(lambda xs: [x + 1 for x in xs], batch_size=8, timeout_ms=1)

    async def use(offset: int) -> tuple[int, list[int], list[int], list[int]]:
        one = await p.acall(offset)
        many = await p.acall([offset, offset + 1])
        empty = await p.acall([])
        gathered = await asyncio.gather(*(p.acall(offset + i) for i in range(10)))
        return one, many, empty, gathered

    assert asyncio.run(use(0)) == (1, [1, 2], [], list(range(1, 11)))
    assert p(100) == 101
    assert asyncio.run(use(50)) == (51, [51, 52], [], list(range(51, 61)))


def test_acall_from_many_concurrent_tasks(make_processor: Any) -> None:
    seen: list[int] = []

    def func(xs: list[int]) -> list[int]:
        assert len(xs) <= 16
        seen.extend(xs)
        return [x * 3 for x in xs]

    p = make_processor(func, batch_size=16, timeout_ms=2)

    async def main() -> tuple[list[int], list[list[int]]]:
        singles = asyncio.gather(*(p.acall(i) for i in range(300)))
        lists = asyncio.gather(*(p.acall([1000 + 10 * k + j for j in range(7)]) for k in range(20)))
        return await singles, await lists

    singles, lists = asyncio.run(main())
    assert singles == [3 * i for i in range(300)]
    assert lists == [[3 * (1000 + 10 * k + j) for j in range(7)] for k in range(20)]
    expected = [*range(300), *(1000 + 10 * k + j for k in range(20) for j in range(7))]
    assert sorted(seen) == sorted(expected)


def test_acall_errors_and_timeout(make_processor: Any) -> None:
    rec = Recorder(boom="async boom")
    p = make_processor(rec, batch_size=8, timeout_ms=1)

    async def main() -> None:
        with pytest.raises(Boom, match="async boom"):
            await p.acall("bad")
        blocker = await rec.ablock_worker(p)
        with pytest.raises(TimeoutError):
            await p.acall("late", timeout=0.1)
        rec.release()
        assert await blocker == result_of(BLOCK)
        assert await p.acall("after") == result_of("after")

    asyncio.run(main())
    assert "late" not in rec.seen


def test_cancelled_acall_never_reaches_the_function(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=8, timeout_ms=1)

    async def main() -> None:
        blocker = await rec.ablock_worker(p)
        victim = asyncio.ensure_future(p.acall("victim"))
        victims = asyncio.ensure_future(p.acall(["v1", "v2"]))
        survivor = asyncio.ensure_future(p.acall("survivor"))
        await await_until(lambda: p.stats.queue_size == 4, "4 queued items", WAIT)
        victim.cancel()
        victims.cancel()
        for task in (victim, victims):
            with pytest.raises(asyncio.CancelledError):
                await task
        rec.release()
        assert await blocker == result_of(BLOCK)
        assert await survivor == result_of("survivor")
        assert await p.acall("after") == result_of("after")

    asyncio.run(main())
    assert rec.seen == [BLOCK, "survivor", "after"]
    assert p.stats.queue_size == 0


# --- 5. shutdown ----------------------------------------------------------------------------


def test_shutdown_with_drain_finishes_queued_items(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=2, timeout_ms=1)
    blocker = rec.block_worker(p)
    items = [f"q{i}" for i in range(5)]
    callers = submit_in_order(p, [(item, {}) for item in items])
    stopper = Caller(p.shutdown, drain=True)
    wait_until(lambda: p.closed, "the processor to close")
    with pytest.raises(batched.ProcessorClosedError):
        p("too late")
    rec.release()
    stopper.outcome()
    assert not stopper.is_alive()
    assert blocker.outcome() == result_of(BLOCK)
    assert [caller.outcome() for caller in callers] == [result_of(i) for i in items]
    assert rec.seen == [BLOCK, *items]
    stats = p.stats
    assert stats.drain_batches >= 1
    assert stats.queue_size == 0


def test_shutdown_without_drain_fails_queued_items(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=2, timeout_ms=1)
    blocker = rec.block_worker(p)
    callers = submit_in_order(p, [("q0", {}), (["q1", "q2"], {}), ("q3", {})])
    stopper = Caller(p.shutdown, drain=False)
    wait_until(lambda: p.closed, "the processor to close")
    rec.release()
    stopper.outcome()
    # The running batch still completes; the queued ones fail instead of hanging.
    assert blocker.outcome() == result_of(BLOCK)
    for caller in callers:
        error = caller.failure()
        assert isinstance(error, batched.ProcessorClosedError)
        assert isinstance(error, batched.BatchedError)
    assert rec.seen == [BLOCK]


def test_shutdown_without_drain_fails_queued_acalls(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=2, timeout_ms=1)

    async def main() -> None:
        blocker = await rec.ablock_worker(p)
        queued = [asyncio.ensure_future(p.acall(x)) for x in ("a", ["b", "c"])]
        await await_until(lambda: p.stats.queue_size == 3, "3 queued items", WAIT)
        stopper = Caller(p.shutdown, drain=False)
        await await_until(lambda: p.closed, "the processor to close", WAIT)
        rec.release()
        assert await blocker == result_of(BLOCK)
        for task in queued:
            with pytest.raises(batched.ProcessorClosedError):
                await asyncio.wait_for(task, WAIT)
        stopper.outcome()
        with pytest.raises(batched.ProcessorClosedError):
            await p.acall("after")

    asyncio.run(main())
    assert rec.seen == [BLOCK]


def test_calls_after_shutdown_fail_at_once(make_processor: Any) -> None:
    p = make_processor(lambda xs: xs, timeout_ms=1)
    assert p(1) == 1
    assert not p.closed
    p.shutdown()
    assert p.closed
    with pytest.raises(batched.ProcessorClosedError):
        p(1)
    with pytest.raises(batched.ProcessorClosedError):
        p([1, 2])
    with pytest.raises(batched.ProcessorClosedError):
        asyncio.run(p.acall(1))
    p.shutdown()  # a second shutdown is harmless
    assert p.closed


def test_processor_is_a_context_manager() -> None:
    with batched.BatchProcessor(lambda xs: [x * 2 for x in xs], timeout_ms=1) as p:
        assert isinstance(p, batched.BatchProcessor)
        assert p(4) == 8
        assert p([1, 2]) == [2, 4]
    assert p.closed
    with pytest.raises(batched.ProcessorClosedError):
        p(4)


def test_shutdown_stops_the_worker_thread() -> None:
    def named_for_shutdown(xs: list[Any]) -> list[Any]:
        return xs

    p = batched.BatchProcessor(named_for_shutdown, timeout_ms=1)
    name = f"batched:{named_for_shutdown.__qualname__}"
    assert any(thread.name == name for thread in threading.enumerate())
    assert p("x") == "x"
    p.shutdown()
    assert not any(thread.name == name for thread in threading.enumerate())


def test_collected_processor_stops_its_worker() -> None:
    def collected_soon(xs: list[Any]) -> list[Any]:
        return xs

    name = f"batched:{collected_soon.__qualname__}"
    p = batched.BatchProcessor(collected_soon, timeout_ms=1)
    assert p("x") == "x"
    assert any(thread.name == name for thread in threading.enumerate())
    ref = weakref.ref(p)
    del p
    gc.collect()
    assert ref() is None
    wait_until(
        lambda: not any(thread.name == name for thread in threading.enumerate()),
        "the collected processor's worker to stop",
    )


# --- 6. stats -------------------------------------------------------------------------------


def test_stats_start_empty_and_are_frozen(make_processor: Any) -> None:
    p = make_processor(lambda xs: xs, timeout_ms=1)
    stats = p.stats
    assert isinstance(stats, batched.BatchStats)
    assert stats == batched.BatchStats(settings=stats.settings)
    assert stats.total_processed == 0
    assert stats.total_batches == 0
    with pytest.raises(AttributeError):
        stats.total_processed = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        stats.settings.batch_size = 5  # type: ignore[misc]
    fields = stats.as_dict()
    assert all(getattr(stats, name) == fields[name] for name in fields if name != "settings")
    assert fields["settings"] == stats.settings.as_dict()
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert set(fields) == {
        "queue_size",
        "total_processed",
        "total_batches",
        "avg_batch_size",
        "avg_processing_time",
        "queue_wait_p50",
        "queue_wait_p99",
        "batch_time_p50",
        "batch_time_p99",
        "full_batches",
        "deadline_batches",
        "drain_batches",
        "idle_batches",
        "adaptive_batches",
        "padded_fraction",
        "items_failed",
        "items_timed_out",
        "items_cancelled",
        "items_rejected",
        "settings",
    }


def test_stats_follow_the_work_done(make_processor: Any) -> None:
    batch_size, pause = 8, 0.002

    def func(xs: list[int]) -> list[int]:
        time.sleep(pause)
        return xs

    p = make_processor(func, batch_size=batch_size, timeout_ms=1)
    n = 100
    assert p(list(range(n))) == list(range(n))
    stats = p.stats
    assert stats.total_processed == n
    assert stats.total_batches >= math.ceil(n / batch_size)
    # One list call of 100 items: 12 full batches, then the remaining 4 at their deadline.
    assert (stats.full_batches, stats.deadline_batches, stats.drain_batches) == (12, 1, 0)
    assert stats.full_batches + stats.deadline_batches + stats.drain_batches == stats.total_batches
    assert stats.avg_batch_size == pytest.approx(stats.total_processed / stats.total_batches)
    assert stats.queue_size == 0
    # Every batch slept, so its time is at least that; percentiles never understate.
    assert stats.avg_processing_time >= pause
    assert pause <= stats.batch_time_p50 <= stats.batch_time_p99
    # The last items waited for the 12 batches before theirs.
    assert 0 <= stats.queue_wait_p50 <= stats.queue_wait_p99
    assert stats.queue_wait_p99 >= 12 * pause

    for i in range(5):
        assert p(i) == i
    later = p.stats
    assert later.total_processed == n + 5
    assert later.total_batches == stats.total_batches + 5
    assert later.avg_batch_size == pytest.approx((n + 5) / later.total_batches)
    assert later.avg_batch_size < stats.avg_batch_size


def test_queue_size_counts_waiting_items(make_processor: Any) -> None:
    rec = Recorder()
    p = make_processor(rec, batch_size=8, timeout_ms=1)
    blocker = rec.block_worker(p)
    callers = submit_in_order(p, [("a", {}), (["b", "c", "d"], {})])
    assert p.stats.queue_size == 4
    rec.release()
    blocker.outcome()
    for caller in callers:
        caller.outcome()
    stats = p.stats
    assert stats.queue_size == 0
    assert stats.total_processed == 5
    assert stats.total_batches == 2


# --- 8. array outputs -----------------------------------------------------------------------


def test_numpy_array_output_gives_each_caller_its_row(make_processor: Any) -> None:
    np = pytest.importorskip("numpy")

    def embed(xs: list[float]) -> Any:
        column = np.asarray(xs, dtype=np.float64)
        return np.stack([column, column * 2, column * 3], axis=1)

    p = make_processor(embed, batch_size=8, timeout_ms=1)
    row = p(2.0)
    assert isinstance(row, np.ndarray)
    assert row.shape == (3,)
    np.testing.assert_array_equal(row, [2.0, 4.0, 6.0])

    values = [float(v) for v in range(20)]
    rows = p(values)
    assert isinstance(rows, list)
    assert len(rows) == 20
    for v, r in zip(values, rows, strict=True):
        np.testing.assert_array_equal(r, [v, 2 * v, 3 * v])

    results = _call_from_threads(p, list(range(40)))
    for v, r in enumerate(results):
        assert r.shape == (3,)
        np.testing.assert_array_equal(r, [v, 2 * v, 3 * v])


def test_one_dimensional_numpy_output_and_tuple_output(make_processor: Any) -> None:
    np = pytest.importorskip("numpy")
    p = make_processor(lambda xs: np.asarray(xs) * 2, batch_size=8, timeout_ms=1)
    assert p(21) == 42
    assert p([1, 2, 3]) == [2, 4, 6]
    q = make_processor(lambda xs: tuple(x + 1 for x in xs), batch_size=8, timeout_ms=1)
    assert q(1) == 2
    assert q([1, 2]) == [2, 3]
    bad = make_processor(lambda xs: np.zeros((len(xs) + 1, 2)), batch_size=8, timeout_ms=1)
    with pytest.raises(ValueError, match=r"\b3\b.*\b2\b"):
        bad([1, 2])


def test_torch_tensor_output_gives_each_caller_its_row(make_processor: Any) -> None:
    torch = pytest.importorskip("torch")

    def embed(xs: list[float]) -> Any:
        column = torch.tensor(xs, dtype=torch.float64)
        return torch.stack([column, column + 1], dim=1)

    p = make_processor(embed, batch_size=8, timeout_ms=1)
    row = p(5.0)
    assert isinstance(row, torch.Tensor)
    assert row.tolist() == [5.0, 6.0]
    assert [r.tolist() for r in p([1.0, 2.0, 3.0])] == [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]


# --- 9. the process as a whole ------------------------------------------------------------


def test_import_does_not_import_numpy_or_torch() -> None:
    run_python(
        "import batched, sys; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))"
    )


def test_interpreter_exit_does_not_hang_on_blocked_callers() -> None:
    code = """
        import threading, time
        import batched

        started = threading.Event()

        @batched.dynamically(batch_size=2, timeout_ms=1)
        def slow(items):
            started.set()
            time.sleep(60)
            return items

        for i in range(6):
            threading.Thread(target=slow, args=(i,), daemon=True).start()
        assert started.wait(20)
        time.sleep(0.2)
        print("exiting", flush=True)
    """
    started = time.monotonic()
    done = run_python(code, timeout=20)
    assert "exiting" in done.stdout, done.stderr
    assert time.monotonic() - started < 20


def test_ctrl_c_interrupts_a_blocked_call() -> None:
    code = """
        import sys, threading
        import batched

        stop = threading.Event()

        @batched.dynamically(timeout_ms=1)
        def slow(items):
            print("started", flush=True)
            stop.wait(60)
            return items

        try:
            slow(1)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            stop.set()
            sys.exit(0)
        print("not interrupted", flush=True)
        sys.exit(1)
    """
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as child:
        output = _interrupt_once_started(child)
    text = "".join(output)
    assert "interrupted\n" in output, text
    assert "not interrupted" not in text
    assert child.returncode == 0, text


def _interrupt_once_started(child: subprocess.Popen[str]) -> list[str]:
    """Sends SIGINT once the child prints "started"; returns its output lines."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while "started\n" not in output:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the child ended early: {''.join(output)}"
            output.append(line)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=10)
    except (subprocess.TimeoutExpired, queue.Empty):
        child.kill()
        child.wait()
        pytest.fail(f"Ctrl-C did not end the blocked call in time; output: {''.join(output)}")
    reader.join(WAIT)
    while (line := lines.get_nowait()) is not None:
        output.append(line)
    return output


def test_printed_stats_give_durations_in_milliseconds_with_their_unit() -> None:
    stats = batched.BatchStats(queue_wait_p50=0.0026, batch_time_p99=0.5, avg_batch_size=3.25)
    text = str(stats)
    assert "queue_wait_p50=2.600 ms" in text
    assert "batch_time_p99=500.000 ms" in text
    assert "avg_batch_size=3.250," in text
    assert stats.queue_wait_p50 == 0.0026  # the attribute itself stays in seconds
    assert "settings=BatchSettings(batch_size=32, timeout_ms=5.0," in text
    assert repr(stats).startswith("BatchStats(queue_size=0, total_processed=0,")
    assert "queue_wait_p50=0.0026," in repr(stats)
