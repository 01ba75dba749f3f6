"""The inference flavours: ``batched.inference.dynamically`` and ``batched.aio.inference``.

Expected values are computed here, independently of the library: rows are padded by hand and
compared with what the decorated function received, and every caller's result is checked
exactly. Tests that need batches to form block the worker inside the first batch (a ``Gate``)
and wait until the queue holds everything they submitted, so no assertion depends on timing;
every wait has a generous upper bound so that a bug shows up as a failure rather than a hang.
"""

from __future__ import annotations

import asyncio
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from batched import ProcessorClosedError, inference
from batched.aio import inference as aio_inference
from conftest import Gate, run_python, wait_until

try:
    import torch
except ImportError:  # pragma: no cover - the test environment installs torch
    torch = None

pytestmark = pytest.mark.timeout(120)

# An upper bound for anything that should happen "soon"; never reached unless something is wrong.
WAIT = 20.0
PAD_ID = -1

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
CUDA = torch is not None and torch.cuda.is_available()


def needs_cuda(test: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a CUDA test (``cuda``: the one skip ``BATCHED_REQUIRE_ALL=1`` allows) and skips it
    on a machine without CUDA."""
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="CUDA is not available")(test))


LIBS = ["numpy", pytest.param("torch", marks=needs_torch)]


# --------------------------------------------------------------------------------------------
# helpers


def to_lib(lib: str, value: Any) -> Any:
    """``value`` (anything numpy takes) as a numpy array or a CPU torch tensor."""
    array = np.asarray(value)
    if lib == "numpy":
        return array
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def row_sums(lib: str, batch_rows: list[int] | None = None) -> Callable[[dict[str, Any]], Any]:
    """A model that returns each row's sum of ``input_ids`` as ``lib``'s array, and appends
    each batch's row count to ``batch_rows``."""

    def model(features: dict[str, Any]) -> Any:
        ids = as_numpy(features["input_ids"]).astype(np.int64)
        if batch_rows is not None:
            batch_rows.append(len(ids))
        return to_lib(lib, ids.sum(axis=1))

    return model


def lib_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "numpy"
    assert torch is not None
    assert isinstance(value, torch.Tensor), type(value)
    return "torch"


def dtype_name(value: Any) -> str:
    return str(value.dtype).removeprefix("torch.")


def shares_memory(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.shares_memory(a, b))
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def padded(row: np.ndarray, length: int, pad: Any, side: str) -> np.ndarray:
    """``row`` padded along its first axis to ``length`` with ``pad`` on ``side``."""
    out = np.full((length, *row.shape[1:]), pad, dtype=row.dtype)
    if side == "right":
        out[: len(row)] = row
    else:
        out[length - len(row) :] = row
    return out


def gated(
    processor: Any,
    gate: Gate,
    first: Callable[[], Any],
    rest: list[Callable[[], Any]],
    rest_rows: int,
    *,
    catch: bool = False,
) -> tuple[Any, list[Any]]:
    """Runs ``first`` on a thread until it blocks in the gate, then every call of ``rest`` on
    threads of their own; releases the gate once the ``rest_rows`` rows are all queued.
    Returns the results: exceptions are re-raised, or with ``catch`` returned instead."""
    if catch:
        first, rest = _catching(first), [_catching(call) for call in rest]
    with ThreadPoolExecutor(max_workers=len(rest) + 1) as pool:
        head = pool.submit(first)
        try:
            assert gate.entered.wait(WAIT), "the first batch never started"
            futures = [pool.submit(call) for call in rest]
            wait_until(lambda: processor.stats.queue_size == rest_rows, f"{rest_rows} rows queued")
        finally:
            gate.release()
        return head.result(WAIT), [future.result(WAIT) for future in futures]


def _catching(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return call()
        except Exception as error:
            return error

    return run


@pytest.fixture
def track() -> Iterator[Callable[[Any], Any]]:
    """Registers processors to shut down at the end of the test."""
    made: list[Any] = []

    def add(processor: Any) -> Any:
        made.append(processor)
        return processor

    yield add
    for processor in made:
        processor.shutdown()


# --------------------------------------------------------------------------------------------
# 1. many concurrent single-row calls: exact results, padding values, side and dtypes


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("lib", LIBS)
def test_concurrent_single_rows_are_padded_and_answered_exactly(
    lib: str, side: str, track: Callable[[Any], Any]
) -> None:
    rng = np.random.default_rng(1)
    lengths = [int(n) for n in rng.integers(1, 41, size=32)]
    lengths[5] = 40  # at least one row of the longest length in the second batch
    gate = Gate()
    received: list[tuple[Any, Any]] = []
    outputs: list[Any] = []

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        assert set(features) == {"input_ids", "attention_mask"}
        ids, mask = features["input_ids"], features["attention_mask"]
        received.append((ids, mask))
        ids_np, mask_np = as_numpy(ids).astype(np.int64), as_numpy(mask)
        rows, longest = ids_np.shape
        result = np.stack(
            [(ids_np * mask_np).sum(axis=1), np.full(rows, longest), mask_np.sum(axis=1)], axis=1
        )
        out = to_lib(lib, result)
        outputs.append(out)
        return out

    processor = track(
        inference.dynamically(
            pad_tokens={"input_ids": PAD_ID},
            padding_side=side,
            batch_size=32,
            timeout_ms=5.0,
        )(model)
    )

    def call(k: int) -> Callable[[], Any]:
        length = lengths[k]
        ids = to_lib(lib, np.arange(1, length + 1, dtype=np.int32))
        mask = to_lib(lib, np.ones(length, dtype=np.int64))

        def run() -> Any:
            if k % 3 == 0:  # dense (1, L) arrays in a dict
                return processor({"input_ids": ids[None], "attention_mask": mask[None]})
            if k % 3 == 1:  # lists of per-row arrays, as keywords
                return processor(input_ids=[ids], attention_mask=[mask])
            return processor({"input_ids": [ids], "attention_mask": mask[None]})  # both forms

        return run

    first, rest = gated(processor, gate, call(0), [call(k) for k in range(1, 32)], 31)
    results = [first, *rest]

    # The blocked first call went alone; the 31 others queued and left as one batch.
    assert len(received) == 2
    batch_lengths = [[lengths[0]], lengths[1:]]
    for (ids, mask), expected_lengths in zip(received, batch_lengths, strict=True):
        assert lib_of(ids) == lib
        assert lib_of(mask) == lib
        assert dtype_name(ids) == "int32"
        assert dtype_name(mask) == "int64"
        ids_np, mask_np = as_numpy(ids), as_numpy(mask)
        longest = max(expected_lengths)
        assert ids_np.shape == mask_np.shape == (len(expected_lengths), longest)
        real = [int(n) for n in mask_np.sum(axis=1)]
        assert sorted(real) == sorted(expected_lengths)
        for row_ids, row_mask, length in zip(ids_np, mask_np, real, strict=True):
            expected_ids = padded(np.arange(1, length + 1, dtype=np.int32), longest, PAD_ID, side)
            expected_mask = padded(np.ones(length, dtype=np.int64), longest, 0, side)
            np.testing.assert_array_equal(row_ids, expected_ids)
            np.testing.assert_array_equal(row_mask, expected_mask)

    for k, result in enumerate(results):
        length = lengths[k]
        assert lib_of(result) == lib
        assert tuple(result.shape) == (1, 3)
        batch_longest = lengths[0] if k == 0 else max(lengths[1:])
        assert as_numpy(result).tolist() == [[length * (length + 1) // 2, batch_longest, length]]
        # A call whose rows were all in one batch gets a view of the batch's output.
        assert any(shares_memory(result, out) for out in outputs)

    stats = processor.stats
    assert stats.total_processed == 32
    assert stats.total_batches == 2
    assert stats.avg_batch_size == pytest.approx(16.0)
    assert stats.avg_batch_size > 1
    assert stats.queue_size == 0
    padded_positions = lengths[0] + 31 * max(lengths[1:])
    assert stats.padded_fraction == pytest.approx(1 - sum(lengths) / padded_positions)


@pytest.mark.parametrize("lib", LIBS)
def test_free_running_threads_get_their_own_rows(lib: str, track: Callable[[Any], Any]) -> None:
    """No gate: 32 threads call at once; whatever batches form, every answer is exact."""
    rng = np.random.default_rng(11)
    lengths = [int(n) for n in rng.integers(1, 41, size=32)]
    batch_sizes: list[int] = []
    model = row_sums(lib, batch_sizes)
    processor = track(inference.dynamically(batch_size=16, timeout_ms=20.0)(model))
    start = threading.Barrier(32)

    def call(k: int) -> Any:
        start.wait(WAIT)
        return processor(input_ids=[to_lib(lib, np.arange(1, lengths[k] + 1))])

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(32)))
    for length, result in zip(lengths, results, strict=True):
        assert as_numpy(result).tolist() == [length * (length + 1) // 2]
    assert sum(batch_sizes) == 32
    assert max(batch_sizes) <= 16


@pytest.mark.parametrize("lib", LIBS)
def test_acall_from_the_thread_flavour(lib: str, track: Callable[[Any], Any]) -> None:
    lengths = list(range(1, 65))
    processor = track(inference.dynamically(batch_size=16, timeout_ms=5.0)(row_sums(lib)))

    async def main() -> list[Any]:
        calls = []
        for length in lengths:
            ids = to_lib(lib, np.arange(1, length + 1))
            if length % 2:
                calls.append(processor.acall({"input_ids": ids[None]}))
            else:
                calls.append(processor.acall(input_ids=[ids]))
        return await asyncio.gather(*calls)

    results = asyncio.run(asyncio.wait_for(main(), WAIT))
    for length, result in zip(lengths, results, strict=True):
        assert as_numpy(result).tolist() == [length * (length + 1) // 2]
    assert processor.stats.total_processed == 64


# --------------------------------------------------------------------------------------------
# 2. rows with more axes: (L, D) token embeddings padded on the first axis; images stacked


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("lib", LIBS)
def test_two_dimensional_rows_and_images(lib: str, side: str, track: Callable[[Any], Any]) -> None:
    rng = np.random.default_rng(2)
    count, dim, pad = 12, 4, -2.5
    tokens = [
        rng.standard_normal((int(n), dim)).astype(np.float32)
        for n in rng.integers(1, 9, size=count)
    ]
    images = [rng.standard_normal((3, 5, 5)).astype(np.float32) for _ in range(count)]
    gate = Gate()
    received: list[dict[str, Any]] = []

    def model(features: dict[str, Any]) -> dict[str, Any]:
        gate.hold()
        received.append(features)
        ids = as_numpy(features["id"])
        pixels = as_numpy(features["pixels"]).astype(np.float64)
        return {
            "id": features["id"],
            "pixel_sum": to_lib(lib, pixels.reshape(len(ids), -1).sum(axis=1)),
            "tokens": features["tokens"],
        }

    processor = track(
        inference.dynamically(pad_tokens={"tokens": pad}, padding_side=side, batch_size=32)(model)
    )

    def call(k: int) -> Callable[[], Any]:
        def run() -> Any:
            return processor(
                id=to_lib(lib, np.array([k], dtype=np.int64)),  # a 1-D (n,) feature
                tokens=[to_lib(lib, tokens[k])],
                pixels=to_lib(lib, images[k][None]),  # dense (1, 3, 5, 5)
            )

        return run

    first, rest = gated(processor, gate, call(0), [call(k) for k in range(1, count)], count - 1)

    assert len(received) == 2
    for features in received:
        ids = as_numpy(features["id"])
        assert dtype_name(features["id"]) == "int64"
        assert ids.shape == (len(ids),)
        assert dtype_name(features["tokens"]) == "float32"
        assert dtype_name(features["pixels"]) == "float32"
        longest = max(len(tokens[k]) for k in ids)
        assert features["tokens"].shape == (len(ids), longest, dim)
        # Same-shaped images are stacked unchanged.
        np.testing.assert_array_equal(
            as_numpy(features["pixels"]), np.stack([images[k] for k in ids])
        )
        for row, k in zip(as_numpy(features["tokens"]), ids, strict=True):
            np.testing.assert_array_equal(row, padded(tokens[k], longest, pad, side))
    assert sorted(k for features in received for k in as_numpy(features["id"])) == list(
        range(count)
    )

    for k, result in enumerate([first, *rest]):
        assert set(result) == {"id", "pixel_sum", "tokens"}
        assert as_numpy(result["id"]).tolist() == [k]
        assert as_numpy(result["pixel_sum"])[0] == pytest.approx(float(images[k].sum()), rel=1e-5)
        row = as_numpy(result["tokens"])[0]
        assert row.dtype == np.float32
        length = len(tokens[k])
        real = row[:length] if side == "right" else row[len(row) - length :]
        np.testing.assert_array_equal(real, tokens[k])
        np.testing.assert_array_equal(row, padded(tokens[k], len(row), pad, side))


# --------------------------------------------------------------------------------------------
# 3. list, dict and tuple outputs are split per call


@pytest.mark.parametrize("kind", ["array", "list", "tuple", "dict", "nested"])
@pytest.mark.parametrize("lib", LIBS)
def test_structured_outputs_are_split_per_call(
    lib: str, kind: str, track: Callable[[Any], Any]
) -> None:
    gate = Gate()
    leaves: list[Any] = []

    def build(a: Any, b: Any) -> Any:
        if kind == "array":
            return a
        if kind == "list":
            return [a, b]
        if kind == "tuple":
            return (a, b)
        if kind == "dict":
            return {"a": a, "b": b}
        return {"pair": (a, [b]), "a": a}

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        ids = as_numpy(features["id"]).astype(np.int64)
        values = as_numpy(features["x"]).astype(np.int64)
        a = to_lib(lib, ids * 10)
        b = to_lib(lib, np.stack([ids, values.sum(axis=1)], axis=1))
        leaves.extend([a, b])
        return build(a, b)

    processor = track(inference.dynamically(batch_size=64)(model))
    # Calls of 1 to 4 rows; row j of call c has id 100 * c + j and x = [id] * (c + 1).
    sizes = [1, 3, 2, 4, 1, 2]

    def features_of(c: int) -> dict[str, Any]:
        ids = np.array([100 * c + j for j in range(sizes[c])], dtype=np.int64)
        x = np.repeat(ids[:, None], c + 1, axis=1)
        return {"id": to_lib(lib, ids), "x": to_lib(lib, x)}

    def call(c: int) -> Callable[[], Any]:
        return lambda: processor(features_of(c))

    first, rest = gated(
        processor, gate, call(0), [call(c) for c in range(1, len(sizes))], sum(sizes[1:])
    )

    for c, result in enumerate([first, *rest]):
        ids = np.array([100 * c + j for j in range(sizes[c])], dtype=np.int64)
        expected_a = ids * 10
        expected_b = np.stack([ids, ids * (c + 1)], axis=1)
        if kind == "array":
            parts = [(result, expected_a)]
        elif kind in ("list", "tuple"):
            assert type(result) is (list if kind == "list" else tuple)
            assert len(result) == 2
            parts = [(result[0], expected_a), (result[1], expected_b)]
        elif kind == "dict":
            assert isinstance(result, dict)
            assert set(result) == {"a", "b"}
            parts = [(result["a"], expected_a), (result["b"], expected_b)]
        else:
            assert isinstance(result, dict)
            assert set(result) == {"pair", "a"}
            pair = result["pair"]
            assert type(pair) is tuple
            assert len(pair) == 2
            assert type(pair[1]) is list
            assert len(pair[1]) == 1
            parts = [
                (result["a"], expected_a),
                (pair[0], expected_a),
                (pair[1][0], expected_b),
            ]
        for value, expected in parts:
            assert lib_of(value) == lib
            np.testing.assert_array_equal(as_numpy(value), expected)
            assert any(shares_memory(value, leaf) for leaf in leaves)


def test_namedtuple_output_is_split(track: Callable[[Any], Any]) -> None:
    pair = namedtuple("pair", "total longest")

    def model(features: dict[str, Any]) -> Any:
        x = features["x"]
        return pair(x.sum(axis=1), x.max(axis=1))

    processor = track(inference.dynamically(timeout_ms=1.0)(model))
    result = processor(x=np.array([[1, 2], [3, 4]]))
    assert isinstance(result, pair)
    assert result.total.tolist() == [3, 7]
    assert result.longest.tolist() == [2, 4]


# --------------------------------------------------------------------------------------------
# 4. multi-row calls, and calls split across batches


@pytest.mark.parametrize("lib", LIBS)
def test_multi_row_calls_in_one_batch(lib: str, track: Callable[[Any], Any]) -> None:
    rng = np.random.default_rng(4)
    gate = Gate()
    received: list[Any] = []

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        ids = as_numpy(features["input_ids"]).astype(np.int64)
        received.append(ids.copy())
        return to_lib(lib, np.stack([ids.sum(axis=1), np.full(len(ids), ids.shape[1])], axis=1))

    processor = track(inference.dynamically(batch_size=64, small_batch_threshold=2)(model))
    calls: list[list[np.ndarray]] = []
    for c in range(8):
        rows = int(rng.integers(1, 7))
        if c % 2:  # dense (n, L): rows of one length
            length = int(rng.integers(1, 30))
            calls.append([np.arange(1, length + 1) + 1000 * c + 100 * j for j in range(rows)])
        else:  # ragged list
            calls.append(
                [
                    np.arange(1, int(rng.integers(1, 30)) + 1) + 1000 * c + 100 * j
                    for j in range(rows)
                ]
            )

    def call(c: int) -> Callable[[], Any]:
        rows = [row.astype(np.int64) for row in calls[c]]
        if c % 2:
            return lambda: processor(input_ids=to_lib(lib, np.stack(rows)))
        return lambda: processor({"input_ids": [to_lib(lib, row) for row in rows]})

    rest_rows = sum(len(rows) for rows in calls[1:])
    first, rest = gated(processor, gate, call(0), [call(c) for c in range(1, 8)], rest_rows)

    assert len(received) == 2
    longest = max(len(row) for rows in calls[1:] for row in rows)
    assert received[1].shape == (rest_rows, longest)
    # Every queued row, padded with 0 on the right to the batch's longest (rows are unique).
    expected_rows = sorted(
        tuple(padded(row, longest, 0, "right")) for rows in calls[1:] for row in rows
    )
    assert sorted(tuple(row) for row in received[1]) == expected_rows
    first_longest = max(len(row) for row in calls[0])  # the first call went alone
    for c, result in enumerate([first, *rest]):
        expected_longest = first_longest if c == 0 else longest
        expected = [[int(row.sum()), expected_longest] for row in calls[c]]
        assert as_numpy(result).tolist() == expected


@pytest.mark.parametrize("lib", LIBS)
def test_call_larger_than_batch_size_is_split_and_merged_in_order(
    lib: str, track: Callable[[Any], Any]
) -> None:
    rng = np.random.default_rng(5)
    gate = Gate()
    batch_rows: list[int] = []

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        ids = as_numpy(features["input_ids"]).astype(np.int64)
        batch_rows.append(len(ids))
        return {"sum": to_lib(lib, ids.sum(axis=1)), "first": to_lib(lib, ids[:, 0])}

    processor = track(inference.dynamically(batch_size=8, timeout_ms=1.0)(model))
    big = [np.arange(1, int(n) + 1) + 1000 * j for j, n in enumerate(rng.integers(1, 40, size=50))]
    small = [np.arange(1, k + 2) + 100_000 * (k + 1) for k in range(10)]

    def big_call() -> Any:
        return processor(input_ids=[to_lib(lib, row) for row in big])

    def small_call(k: int) -> Callable[[], Any]:
        return lambda: processor(input_ids=[to_lib(lib, small[k])])

    blocker = np.arange(1, 4)
    first, results = gated(
        processor,
        gate,
        lambda: processor(input_ids=[to_lib(lib, blocker)]),
        [big_call, *(small_call(k) for k in range(10))],
        60,
    )
    assert as_numpy(first["sum"]).tolist() == [6]
    big_result, *small_results = results
    assert lib_of(big_result["sum"]) == lib
    assert as_numpy(big_result["sum"]).tolist() == [int(row.sum()) for row in big]
    assert as_numpy(big_result["first"]).tolist() == [int(row[0]) for row in big]
    for k, result in enumerate(small_results):
        assert as_numpy(result["sum"]).tolist() == [int(small[k].sum())]
    assert max(batch_rows) <= 8
    assert sum(batch_rows) == 61
    assert processor.stats.total_batches >= 1 + 8  # 60 queued rows need at least 8 batches
    assert processor.stats.queue_size == 0


def test_split_call_with_per_token_output(track: Callable[[Any], Any]) -> None:
    def model(features: dict[str, Any]) -> Any:
        return features["input_ids"] * 2  # one output per token: (rows, longest)

    processor = track(inference.dynamically(batch_size=2, timeout_ms=1.0)(model))
    rows = [np.arange(1, n + 1) for n in (1, 2, 3, 4, 5)]
    result = processor(input_ids=rows)
    assert len(result) == 5
    for row, out in zip(rows, result, strict=True):
        np.testing.assert_array_equal(out[: len(row)], row * 2)


# --------------------------------------------------------------------------------------------
# 5. spread_kwargs, the pad_token alias, defaults and option errors


@pytest.mark.parametrize("lib", LIBS)
def test_spread_kwargs(lib: str, track: Callable[[Any], Any]) -> None:
    seen: list[tuple[Any, Any]] = []

    def model(input_ids: Any, attention_mask: Any) -> Any:
        seen.append((input_ids, attention_mask))
        ids, mask = as_numpy(input_ids), as_numpy(attention_mask)
        return to_lib(lib, (ids * mask).sum(axis=1))

    processor = track(
        inference.dynamically(spread_kwargs=True, pad_tokens={"input_ids": 7}, timeout_ms=1.0)(
            model
        )
    )
    rows = [np.array([1, 2, 3]), np.array([4])]
    result = processor(
        input_ids=[to_lib(lib, row) for row in rows],
        attention_mask=[to_lib(lib, np.ones_like(row)) for row in rows],
    )
    assert as_numpy(result).tolist() == [6, 4]
    ((ids, mask),) = seen
    np.testing.assert_array_equal(as_numpy(ids), [[1, 2, 3], [4, 7, 7]])
    np.testing.assert_array_equal(as_numpy(mask), [[1, 1, 1], [1, 0, 0]])


def test_pad_token_alias_and_default_pad(track: Callable[[Any], Any]) -> None:
    seen: list[dict[str, np.ndarray]] = []

    def model(features: dict[str, Any]) -> Any:
        seen.append({name: value.copy() for name, value in features.items()})
        return features["input_ids"][:, 0]

    aliased = track(
        inference.dynamically(pad_token={"input_ids": 9}, padding_side="left", timeout_ms=1.0)(
            model
        )
    )
    rows = [np.array([1, 2, 3], dtype=np.int16), np.array([5], dtype=np.int16)]
    masks = [np.ones(3, dtype=np.int8), np.ones(1, dtype=np.int8)]
    assert aliased(input_ids=rows, attention_mask=masks).tolist() == [1, 9]
    np.testing.assert_array_equal(seen[-1]["input_ids"], [[1, 2, 3], [9, 9, 5]])
    np.testing.assert_array_equal(seen[-1]["attention_mask"], [[1, 1, 1], [0, 0, 1]])
    assert seen[-1]["input_ids"].dtype == np.int16
    assert seen[-1]["attention_mask"].dtype == np.int8

    # Bare decorator: every feature is padded with 0 on the right.
    bare = track(inference.dynamically(model))
    assert bare(input_ids=rows, attention_mask=masks).tolist() == [1, 5]
    np.testing.assert_array_equal(seen[-1]["input_ids"], [[1, 2, 3], [5, 0, 0]])
    np.testing.assert_array_equal(seen[-1]["attention_mask"], [[1, 1, 1], [1, 0, 0]])


def test_option_errors_at_decoration_time() -> None:
    def model(features: dict[str, Any]) -> Any:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="pad_tokens or pad_token"):
        inference.dynamically(pad_tokens={"a": 0}, pad_token={"a": 0})
    with pytest.raises(TypeError, match="pad_tokens or pad_token"):
        aio_inference.dynamically(pad_tokens={"a": 0}, pad_token={"a": 0})
    with pytest.raises(ValueError, match="padding_side"):
        inference.dynamically(padding_side="middle")
    with pytest.raises(TypeError, match="spread_kwargs must be True or False"):
        inference.dynamically(spread_kwargs="yes")  # type: ignore[typeddict-item]
    with pytest.raises(TypeError, match="pad_tokens must map"):
        inference.dynamically(pad_tokens=0)
    with pytest.raises(TypeError, match="batch_size"):
        inference.dynamically(batch_size="8")(model)


def test_timeout_and_priority_are_not_features(track: Callable[[Any], Any]) -> None:
    seen: list[set[str]] = []

    def model(features: dict[str, Any]) -> Any:
        seen.append(set(features))
        return features["x"].sum(axis=1)

    processor = track(inference.dynamically(timeout_ms=1.0)(model))
    assert processor(x=np.ones((2, 3)), timeout=WAIT, priority=-1).tolist() == [3, 3]
    assert processor({"x": np.ones((1, 2))}, timeout=WAIT, priority=2).tolist() == [2]
    assert seen == [{"x"}, {"x"}]


def test_method_gets_a_processor_per_instance() -> None:
    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        @inference.dynamically(timeout_ms=1.0)
        def forward(self, features: dict[str, Any]) -> Any:
            return features["x"].sum(axis=1) * self.scale

    a, b = Model(1), Model(10)
    try:
        assert a.forward(x=[np.array([1, 2]), np.array([3])]).tolist() == [3, 3]
        assert b.forward(x=[np.array([1, 2])]).tolist() == [30]
    finally:
        a.forward.shutdown()
        b.forward.shutdown()


# --------------------------------------------------------------------------------------------
# 6. sort_by_length and max_batch_tokens

BUDGET = 2048


def run_length_workload(sort_by_length: bool) -> tuple[float, list[tuple[int, int, list[int]]]]:
    """96 single-row calls of lengths 8..512 queued behind a gate; returns the padded fraction
    and (rows, longest, real lengths) of every batch the function received."""
    rng = np.random.default_rng(6)
    lengths = [int(n) for n in rng.integers(8, 513, size=96)]
    lengths[0] = 8  # the gated call, alone in its batch
    gate = Gate()
    batches: list[tuple[int, int, list[int]]] = []

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        ids, mask = features["input_ids"], features["attention_mask"]
        batches.append((ids.shape[0], ids.shape[1], [int(n) for n in mask.sum(axis=1)]))
        return np.stack([(ids * mask).sum(axis=1), mask.sum(axis=1)], axis=1)

    processor = inference.dynamically(
        batch_size=16,
        timeout_ms=20.0,
        sort_by_length=sort_by_length,
        max_batch_tokens=BUDGET,
    )(model)
    try:

        def call(k: int) -> Callable[[], Any]:
            row = np.arange(1, lengths[k] + 1, dtype=np.int64)
            return lambda: processor(input_ids=[row], attention_mask=[np.ones_like(row)])

        first, rest = gated(processor, gate, call(0), [call(k) for k in range(1, 96)], 95)
        for length, result in zip(lengths, [first, *rest], strict=True):
            assert result.tolist() == [[length * (length + 1) // 2, length]]
        stats = processor.stats
        assert stats.queue_size == 0
        assert stats.total_processed == 96
    finally:
        processor.shutdown()
    assert sorted(n for _, _, real in batches for n in real) == sorted(lengths)
    real_positions = sum(sum(real) for _, _, real in batches)
    padded_positions = sum(rows * longest for rows, longest, _ in batches)
    assert stats.padded_fraction == pytest.approx(1 - real_positions / padded_positions)
    return stats.padded_fraction, batches


def test_length_aware_batches_respect_the_budget_and_sorting_reduces_padding() -> None:
    unsorted_fraction, unsorted_batches = run_length_workload(sort_by_length=False)
    sorted_fraction, sorted_batches = run_length_workload(sort_by_length=True)
    for batches in (unsorted_batches, sorted_batches):
        for rows, longest, real in batches:
            assert rows <= 16
            assert rows * longest <= BUDGET
            assert longest == max(real)  # padded to the batch's own longest row
    # Sorting groups rows of similar length: far less padding for the same workload.
    assert sorted_fraction < unsorted_fraction - 0.1, (sorted_fraction, unsorted_fraction)


@pytest.mark.parametrize("lib", LIBS)
def test_over_budget_row_is_refused_and_not_queued(lib: str, track: Callable[[Any], Any]) -> None:
    received: list[int] = []
    model = row_sums(lib, received)
    processor = track(inference.dynamically(max_batch_tokens=64, timeout_ms=1.0)(model))
    with pytest.raises(ValueError, match="max_batch_tokens"):
        processor(input_ids=[to_lib(lib, np.arange(65))])
    assert processor.stats.queue_size == 0
    # A multi-row call with one row too long is refused whole.
    with pytest.raises(ValueError, match="max_batch_tokens"):
        processor(input_ids=[to_lib(lib, np.arange(3)), to_lib(lib, np.arange(100))])
    with pytest.raises(ValueError, match="max_batch_tokens"):
        processor(input_ids=to_lib(lib, np.ones((2, 70), dtype=np.int64)))
    assert processor.stats.queue_size == 0
    assert received == []
    # The queue is not stuck: later calls (at the budget, and several rows) still work.
    assert as_numpy(processor(input_ids=[to_lib(lib, np.ones(64, dtype=np.int64))])).tolist() == [
        64
    ]
    rows = [to_lib(lib, np.arange(n, dtype=np.int64)) for n in (5, 40, 64, 1)]
    assert as_numpy(processor(input_ids=rows)).tolist() == [10, 780, 2016, 0]
    assert processor.stats.queue_size == 0


def test_over_budget_row_is_refused_by_the_aio_flavour() -> None:
    def model(features: dict[str, Any]) -> Any:
        return features["input_ids"].sum(axis=1)

    processor = aio_inference.dynamically(max_batch_tokens=10, timeout_ms=1.0)(model)

    async def main() -> Any:
        with pytest.raises(ValueError, match="max_batch_tokens"):
            await processor(input_ids=[np.arange(11)])
        assert processor.stats.queue_size == 0
        return await processor(input_ids=[np.arange(10)])

    try:
        assert asyncio.run(asyncio.wait_for(main(), WAIT)).tolist() == [45]
    finally:
        processor.shutdown()


# --------------------------------------------------------------------------------------------
# 7. bad input fails at call time


def ints(*shape: int, dtype: Any = np.int64) -> np.ndarray:
    return np.ones(shape, dtype=dtype)


def torch_ints(*shape: int, device: str = "cpu") -> Any:
    return torch.ones(shape, dtype=torch.int64, device=device)


GOOD_NUMPY = {"a": ints(2, 3), "b": ints(2, 3)}

# (id, first call, bad call, exception, message pattern); a first call of None means none.
BAD_CALLS: list[Any] = [
    ("missing_key", GOOD_NUMPY, lambda: {"a": ints(1, 3)}, ValueError, r"missing \['b'\]"),
    (
        "extra_key",
        GOOD_NUMPY,
        lambda: {"a": ints(1, 3), "b": ints(1, 3), "c": ints(1, 3)},
        ValueError,
        r"unexpected \['c'\]",
    ),
    (
        "row_count_mismatch",
        GOOD_NUMPY,
        lambda: {"a": ints(2, 3), "b": ints(3, 3)},
        ValueError,
        "same number of rows",
    ),
    (
        "row_count_mismatch_lists",
        GOOD_NUMPY,
        lambda: {"a": [ints(3), ints(2)], "b": [ints(3)]},
        ValueError,
        "same number of rows",
    ),
    (
        "dtype_changed",
        GOOD_NUMPY,
        lambda: {"a": ints(1, 3, dtype=np.int32), "b": ints(1, 3)},
        TypeError,
        "dtype",
    ),
    (
        "dtype_mixed_in_a_list",
        GOOD_NUMPY,
        lambda: {"a": [ints(3), ints(2, dtype=np.int32)], "b": [ints(3), ints(2)]},
        ValueError,
        "dtypes",
    ),
    (
        "trailing_shape_changed",
        GOOD_NUMPY,
        lambda: {"a": ints(1, 3, 2), "b": ints(1, 3)},
        ValueError,
        "rows of shape",
    ),
    (
        "trailing_shape_mixed_in_a_list",
        {"a": ints(1, 3, 4), "b": ints(1, 3)},
        lambda: {"a": [ints(3, 4), ints(2, 5)], "b": [ints(3), ints(2)]},
        ValueError,
        "trailing shapes",
    ),
    ("not_an_array", GOOD_NUMPY, lambda: {"a": 5, "b": ints(1, 3)}, TypeError, "numpy array"),
    (
        "python_lists",
        GOOD_NUMPY,
        lambda: {"a": [1, 2, 3], "b": ints(3, 3)},
        TypeError,
        "holds a int",
    ),
    (
        "one_value_per_row_after_rows_with_a_length",
        GOOD_NUMPY,
        lambda: {"a": ints(2), "b": ints(2, 3)},
        ValueError,
        r"has one value per row \(no axis to pad\) but had rows of shape \(length\)",
    ),
    ("zero_d", GOOD_NUMPY, lambda: {"a": np.array(1), "b": ints(1, 3)}, ValueError, "0-d"),
    (
        "zero_d_row_after_the_first",
        GOOD_NUMPY,
        lambda: {"a": [ints(3), np.array(5)], "b": [ints(3), ints(1)]},
        ValueError,
        "0-d rows",
    ),
    ("empty_rows", GOOD_NUMPY, lambda: {"a": ints(0, 3), "b": ints(0, 3)}, ValueError, "row"),
    ("empty_list", GOOD_NUMPY, lambda: {"a": [], "b": []}, ValueError, "empty list"),
    ("not_a_dict", GOOD_NUMPY, lambda: ints(2, 3), TypeError, "dict of features"),
    ("list_not_dict", GOOD_NUMPY, lambda: [ints(3)], TypeError, "dict of features"),
    ("empty_dict", GOOD_NUMPY, lambda: {}, TypeError, "dict of features"),
    ("not_a_dict_first", None, lambda: ints(2, 3), TypeError, "dict of features"),
    ("no_rows", GOOD_NUMPY, lambda: {"a": ints(0, 3), "b": ints(0, 3)}, ValueError, "at least one"),
    ("not_an_array_first", None, lambda: {"a": "text", "b": ints(1)}, TypeError, "numpy array"),
    ("empty_list_first", None, lambda: {"a": [], "b": []}, ValueError, "empty list"),
]

TORCH_BAD_CALLS: list[Any] = [
    (
        "numpy_and_torch_in_one_call",
        None,
        lambda: {"a": ints(1, 3), "b": torch_ints(1, 3)},
        TypeError,
        "mixes numpy arrays and torch tensors",
    ),
    (
        "numpy_and_torch_rows_in_one_list",
        None,
        lambda: {"a": [ints(3), torch_ints(2)], "b": [ints(3), ints(2)]},
        TypeError,
        "mixes numpy arrays and torch tensors",
    ),
    (
        "library_changed",
        lambda: GOOD_NUMPY,
        lambda: {"a": torch_ints(1, 3), "b": torch_ints(1, 3)},
        TypeError,
        "one library",
    ),
    # The 'meta' device stands in for a second device on machines without CUDA.
    (
        "mixed_devices",
        None,
        lambda: {"a": torch_ints(1, 3), "b": torch_ints(1, 3, device="meta")},
        ValueError,
        "different devices",
    ),
    (
        "device_changed",
        lambda: {"a": torch_ints(2, 3), "b": torch_ints(2, 3)},
        lambda: {"a": torch_ints(1, 3, device="meta"), "b": torch_ints(1, 3, device="meta")},
        ValueError,
        "first call's were on cpu",
    ),
    (
        "mixed_devices_in_a_list",
        None,
        lambda: {"a": [torch_ints(3), torch_ints(2, device="meta")], "b": [ints(3), ints(2)]},
        ValueError,
        "different devices",
    ),
]


def check_bad_call(
    first: dict[str, Any] | None,
    bad: Callable[[], Any],
    error: type[Exception],
    match: str,
    good: dict[str, Any],
) -> None:
    """Makes the first call (if any), checks that the bad one is refused before reaching the
    queue, then that a good call (the first again, or ``good``) still works."""
    if first is not None:
        good = first
    calls: list[int] = []

    def model(features: dict[str, Any]) -> Any:
        a, b = features["a"], features["b"]
        calls.append(len(a))
        return a.reshape(len(a), -1)[:, :1] + b.reshape(len(b), -1)[:, :1]

    processor = inference.dynamically(timeout_ms=1.0)(model)
    try:
        if first is not None:
            assert processor(first).tolist() == [[2]] * len(first["a"])
        before = list(calls)
        with pytest.raises(error, match=match):
            processor(bad())
        assert calls == before  # refused before reaching the queue
        assert processor.stats.queue_size == 0
        # The processor goes on serving good calls.
        assert as_numpy(processor(good)).tolist() == [[2]] * len(good["a"])
    finally:
        processor.shutdown()


@pytest.mark.parametrize(
    ("first", "bad", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CALLS],
)
def test_bad_input_fails_at_call_time(
    first: dict[str, Any] | None, bad: Callable[[], Any], error: type[Exception], match: str
) -> None:
    check_bad_call(first, bad, error, match, GOOD_NUMPY)


@needs_torch
@pytest.mark.parametrize(
    ("first", "bad", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in TORCH_BAD_CALLS],
)
def test_bad_torch_input_fails_at_call_time(
    first: Callable[[], dict[str, Any]] | None,
    bad: Callable[[], Any],
    error: type[Exception],
    match: str,
) -> None:
    # Tensors are made inside the test, so that the module imports without torch.
    good = {"a": torch_ints(2, 3), "b": torch_ints(2, 3)}
    check_bad_call(None if first is None else first(), bad, error, match, good)


def test_dict_and_keywords_together_is_an_error(track: Callable[[Any], Any]) -> None:
    processor = track(inference.dynamically(timeout_ms=1.0)(lambda features: features["a"]))
    with pytest.raises(TypeError, match="not both"):
        processor({"a": ints(1, 3)}, b=ints(1, 3))
    with pytest.raises(TypeError, match="dict of features"):
        processor()
    assert processor(a=ints(1, 3)).tolist() == [[1, 1, 1]]


def test_refused_empty_first_call_does_not_fix_the_schema(track: Callable[[Any], Any]) -> None:
    processor = track(inference.dynamically(timeout_ms=1.0)(lambda features: features["a"]))
    with pytest.raises(ValueError, match="at least one row"):
        processor(a=np.zeros((0, 4)))
    assert processor(a=np.ones((1, 2), dtype=np.int64)).tolist() == [[1, 1]]


def test_bad_input_fails_in_the_aio_flavour() -> None:
    processor = aio_inference.dynamically(timeout_ms=1.0)(lambda features: features["a"])

    async def main() -> Any:
        assert (await processor(a=ints(1, 2), b=ints(1, 2))).tolist() == [[1, 1]]
        with pytest.raises(ValueError, match=r"missing \['b'\]"):
            await processor(a=ints(1, 2))
        with pytest.raises(TypeError, match="dtype"):
            await processor(a=ints(1, 2, dtype=np.float32), b=ints(1, 2))
        with pytest.raises(ValueError, match="same number of rows"):
            await processor(a=ints(1, 2), b=ints(2, 2))
        assert processor.stats.queue_size == 0
        return await processor(a=ints(2, 2), b=ints(2, 2))

    try:
        assert asyncio.run(asyncio.wait_for(main(), WAIT)).tolist() == [[1, 1], [1, 1]]
    finally:
        processor.shutdown()


# --------------------------------------------------------------------------------------------
# output errors


def test_wrong_output_row_count_fails_every_caller_of_the_batch(
    track: Callable[[Any], Any],
) -> None:
    gate = Gate()

    def model(features: dict[str, Any]) -> Any:
        gate.hold()
        return features["x"][1:, 0]  # one row short

    processor = track(inference.dynamically(batch_size=16)(model))

    def call() -> Any:
        return processor(x=np.ones((2, 3)))

    first, rest = gated(
        processor, gate, lambda: processor(x=np.ones((1, 3))), [call, call], 4, catch=True
    )
    assert isinstance(first, ValueError)
    assert "returned 0 rows for a batch of 1 items" in str(first)
    for error in rest:
        assert isinstance(error, ValueError)
        assert "returned 3 rows for a batch of 4 items" in str(error)
    # The processor goes on.
    processor_ok = track(inference.dynamically(timeout_ms=1.0)(lambda f: f["x"][:, 0]))
    assert processor_ok(x=np.ones((2, 3))).tolist() == [1, 1]


@pytest.mark.parametrize(
    ("output", "match"),
    [
        pytest.param(lambda n: None, "must return an array", id="none"),
        pytest.param(lambda n: 3.5, "must return an array", id="float"),
        pytest.param(lambda n: [1.0] * n, "must return an array", id="list_of_floats"),
        pytest.param(lambda n: np.float64(1.0), "must return an array", id="numpy_scalar"),
        pytest.param(
            lambda n: {"a": np.ones(n), "b": np.ones(n + 1)},
            "different numbers of rows",
            id="dict_of_different_lengths",
        ),
    ],
)
def test_output_that_is_not_rows_is_a_value_error(
    output: Callable[[int], Any], match: str, track: Callable[[Any], Any]
) -> None:
    processor = track(inference.dynamically(timeout_ms=1.0)(lambda f: output(len(f["x"]))))
    with pytest.raises(ValueError, match=match):
        processor(x=np.ones((2, 3)))
    assert processor.stats.queue_size == 0


def test_exception_in_the_function_reaches_the_caller_and_the_processor_goes_on(
    track: Callable[[Any], Any],
) -> None:
    class Boom(Exception):
        pass

    def model(features: dict[str, Any]) -> Any:
        if (features["x"] < 0).any():
            raise Boom("negative")
        return features["x"][:, 0]

    processor = track(inference.dynamically(timeout_ms=1.0)(model))
    with pytest.raises(Boom, match="negative"):
        processor(x=-np.ones((1, 2)))
    assert processor(x=np.ones((1, 2))).tolist() == [1.0]


# --------------------------------------------------------------------------------------------
# 8. the asyncio flavour


@pytest.mark.parametrize("kind", ["async_def", "plain_def"])
@pytest.mark.parametrize("lib", LIBS)
def test_aio_many_tasks_get_exact_results(lib: str, kind: str) -> None:
    rng = np.random.default_rng(8)
    lengths = [int(n) for n in rng.integers(1, 41, size=200)]
    batch_rows: list[int] = []
    in_loop_thread: list[bool] = []
    loop_thread: list[int] = []

    def compute(features: dict[str, Any]) -> Any:
        ids, mask = as_numpy(features["input_ids"]), as_numpy(features["attention_mask"])
        assert dtype_name(features["input_ids"]) == "int32"
        longest = ids.shape[1]
        for row, row_mask in zip(ids, mask, strict=True):
            length = int(row_mask.sum())
            expected = padded(np.arange(1, length + 1, dtype=np.int32), longest, PAD_ID, "left")
            np.testing.assert_array_equal(row, expected)
        batch_rows.append(len(ids))
        sums = (ids.astype(np.int64) * mask).sum(axis=1)
        return to_lib(lib, np.stack([sums, mask.sum(axis=1).astype(np.int64)], axis=1))

    if kind == "async_def":

        async def model(features: dict[str, Any]) -> Any:
            in_loop_thread.append(threading.get_ident() == loop_thread[0])
            await asyncio.sleep(0)
            return compute(features)

    else:

        def model(features: dict[str, Any]) -> Any:
            in_loop_thread.append(threading.get_ident() == loop_thread[0])
            return compute(features)

    processor = aio_inference.dynamically(
        batch_size=32, timeout_ms=20.0, pad_tokens={"input_ids": PAD_ID}, padding_side="left"
    )(model)

    async def one(k: int) -> Any:
        ids = to_lib(lib, np.arange(1, lengths[k] + 1, dtype=np.int32))
        mask = to_lib(lib, np.ones(lengths[k], dtype=np.int64))
        if k % 2:
            return await processor(input_ids=[ids], attention_mask=[mask])
        return await processor({"input_ids": ids[None], "attention_mask": mask[None]})

    async def main() -> list[Any]:
        loop_thread.append(threading.get_ident())
        return await asyncio.gather(*(one(k) for k in range(200)))

    try:
        results = asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        processor.shutdown()
    for length, result in zip(lengths, results, strict=True):
        assert lib_of(result) == lib
        assert as_numpy(result).tolist() == [[length * (length + 1) // 2, length]]
    assert sum(batch_rows) == 200
    assert max(batch_rows) <= 32
    assert len(batch_rows) < 200  # calls were batched
    stats = processor.stats
    assert stats.total_processed == 200
    assert stats.queue_size == 0
    # An async def runs on the caller's loop; a plain def runs off it.
    assert set(in_loop_thread) == {kind == "async_def"}


# --------------------------------------------------------------------------------------------
# 9. devices


@needs_torch
def test_padding_happens_on_the_tensors_device_meta() -> None:
    """'meta' tensors: padded on 'meta' (no data, so only shapes and devices are checked)."""
    seen: list[tuple[str, tuple[int, ...], Any]] = []

    def model(features: dict[str, Any]) -> Any:
        ids = features["input_ids"]
        seen.append((str(ids.device), tuple(ids.shape), ids.dtype))
        return ids.sum(dim=1)

    processor = inference.dynamically(timeout_ms=1.0)(model)
    try:
        rows = [torch.ones(n, dtype=torch.int32, device="meta") for n in (3, 1, 5)]
        result = processor(input_ids=rows)
    finally:
        processor.shutdown()
    assert seen == [("meta", (3, 5), torch.int32)]
    assert result.device.type == "meta"
    assert tuple(result.shape) == (3,)


@needs_torch
def test_device_option_moves_cpu_inputs_meta() -> None:
    """``device=`` moves CPU tensors there once per batch; 'meta' stands in for a GPU."""
    seen: list[dict[str, Any]] = []

    def model(features: dict[str, Any]) -> Any:
        seen.append(
            {name: (value.device.type, tuple(value.shape)) for name, value in features.items()}
        )
        return features["input_ids"].sum(dim=1)

    processor = inference.dynamically(device="meta", timeout_ms=1.0)(model)
    try:
        result = processor(input_ids=[torch.arange(3), torch.arange(2)], label=torch.tensor([1, 2]))
    finally:
        processor.shutdown()
    assert seen == [{"input_ids": ("meta", (2, 3)), "label": ("meta", (2,))}]
    assert result.device.type == "meta"


@needs_cuda
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_happens_on_the_gpu(side: str) -> None:
    seen: list[Any] = []

    def model(features: dict[str, Any]) -> Any:
        ids, mask = features["input_ids"], features["attention_mask"]
        seen.append((ids.device.type, mask.device.type, ids.detach().cpu().numpy()))
        return torch.stack([(ids * mask).sum(dim=1), mask.sum(dim=1)], dim=1)

    processor = inference.dynamically(
        pad_tokens={"input_ids": PAD_ID}, padding_side=side, timeout_ms=1.0
    )(model)
    lengths = [3, 7, 1, 5]
    try:
        result = processor(
            input_ids=[torch.arange(1, n + 1, device="cuda") for n in lengths],
            attention_mask=[torch.ones(n, dtype=torch.int64, device="cuda") for n in lengths],
        )
        with pytest.raises(ValueError, match="different devices"):
            processor(
                input_ids=[torch.arange(1, 3, device="cuda")],
                attention_mask=[torch.ones(2, dtype=torch.int64)],
            )
    finally:
        processor.shutdown()
    ((ids_device, mask_device, ids),) = seen
    assert ids_device == mask_device == "cuda"
    expected = np.stack([padded(np.arange(1, n + 1), 7, PAD_ID, side) for n in lengths])
    np.testing.assert_array_equal(ids, expected)
    assert result.device.type == "cuda"
    assert result.cpu().tolist() == [[n * (n + 1) // 2, n] for n in lengths]


@needs_cuda
def test_device_option_moves_cpu_inputs_to_the_gpu() -> None:
    seen: list[Any] = []

    def model(features: dict[str, Any]) -> Any:
        ids, label = features["input_ids"], features["label"]
        seen.append((ids.device.type, label.device.type, ids.cpu().numpy()))
        return ids.sum(dim=1) + label

    processor = inference.dynamically(device="cuda", timeout_ms=1.0)(model)
    try:
        result = processor(
            input_ids=[torch.arange(1, 4), torch.arange(1, 2)], label=torch.tensor([10, 20])
        )
        dense = processor(input_ids=torch.ones(2, 3, dtype=torch.int64), label=torch.tensor([0, 1]))
    finally:
        processor.shutdown()
    assert seen[0][:2] == ("cuda", "cuda")
    np.testing.assert_array_equal(seen[0][2], [[1, 2, 3], [1, 0, 0]])
    assert result.device.type == "cuda"
    assert result.cpu().tolist() == [16, 21]
    assert dense.device.type == "cuda"
    assert dense.cpu().tolist() == [3, 4]


# --------------------------------------------------------------------------------------------
# 10. importing does not import numpy or torch


def test_importing_the_inference_flavours_imports_neither_numpy_nor_torch() -> None:
    done = run_python(
        """
        import sys
        import batched.inference
        import batched.aio.inference
        from batched import inference

        @inference.dynamically(pad_tokens={"input_ids": 0})
        def f(features):
            return features["input_ids"]

        f.shutdown()
        loaded = sorted(name for name in ("numpy", "torch") if name in sys.modules)
        assert not loaded, loaded
        print("ok")
        """
    )
    assert done.stdout.strip() == "ok"


@needs_torch
def test_calls_from_another_device_than_the_first_call_fail_at_call_time() -> None:
    @inference.dynamically(batch_size=4, timeout_ms=1)
    def model(features: dict[str, Any]) -> Any:
        return features["x"]

    with model:
        assert model({"x": torch.ones(1, 2)}).tolist() == [[1.0, 1.0]]
        with pytest.raises(ValueError, match="on meta but the first call's were on cpu"):
            model({"x": torch.ones(1, 2, device="meta")})
        assert model({"x": torch.zeros(1, 2)}).tolist() == [[0.0, 0.0]]


def test_the_thread_flavour_wraps_its_function_and_says_when_closed() -> None:
    @inference.dynamically(batch_size=4, timeout_ms=1.0)
    def total(features: dict[str, Any]) -> Any:
        """Sums each row."""
        return features["x"].sum(axis=1, keepdims=True)

    with total:
        assert total(x=np.ones((1, 3))).tolist() == [[3.0]]
        assert not total.closed
    assert total.closed
    assert (total.__name__, total.__doc__) == ("total", "Sums each row.")
    assert "closed" in repr(total)
    with pytest.raises(ProcessorClosedError):
        total(x=np.ones((1, 3)))
