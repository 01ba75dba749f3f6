"""Checked by ``mypy --strict`` in tests/test_typing.py: the types editors and checkers see for
decorated functions and methods. Never run; every ``assert_type`` is a check."""

from __future__ import annotations

from typing import Any, assert_type

import batched
import numpy as np
from batched import aio


@batched.dynamically
def double(xs: list[int]) -> list[int]:
    return [x * 2 for x in xs]


@batched.dynamically(batch_size=4, timeout_ms="auto", max_queue_size=100)
def embed(texts: list[str]) -> np.ndarray[Any, Any]:
    return np.zeros((len(texts), 3))


class Model:
    @batched.dynamically(batch_size=8, on_error="isolate")
    def predict(self, texts: list[str]) -> list[float]:
        return [float(len(text)) for text in texts]

    @aio.dynamically
    async def apredict(self, texts: list[str]) -> list[float]:
        return [float(len(text)) for text in texts]


@aio.dynamically(max_concurrent_batches=2)
async def aembed(texts: list[str]) -> list[list[float]]:
    return [[0.0] for _ in texts]


@aio.dynamically
def plain(xs: list[int]) -> list[str]:
    return [str(x) for x in xs]


def thread_calls(model: Model) -> None:
    assert_type(double(1), int)
    assert_type(double([1, 2]), list[int])
    assert_type(double(1, timeout=0.5, priority=-1), int)
    assert_type(embed("text"), Any)
    assert_type(model.predict("text"), float)
    assert_type(model.predict(["a", "b"]), list[float])
    assert_type(double.stats, batched.BatchStats)
    assert_type(double.shutdown(drain=False, timeout=1.0), bool)
    assert_type(aembed.shutdown(timeout=2), bool)


async def async_calls(model: Model) -> None:
    assert_type(await double.acall(3), int)
    assert_type(await model.predict.acall(["a"]), list[float])
    assert_type(await aembed("text"), list[float])
    assert_type(await aembed(["a"], timeout=1.0), list[list[float]])
    assert_type(await plain(1), str)
    assert_type(await model.apredict("a"), float)
