"""What the thread and asyncio inference flavours share: their options and awaited calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from batched._backend import Managed, await_call
from batched._features import FeatureSchema, FeaturesPlan, merge_parts
from batched._options import QueueOptions


class InferenceOptions(QueueOptions, total=False):
    """Options of :func:`batched.inference.dynamically`: the queue's, plus padding."""

    pad_tokens: Mapping[str, Any] | None
    pad_token: Mapping[str, Any] | None
    padding_side: Literal["left", "right"]
    spread_kwargs: bool
    device: Any


class AsyncInferenceOptions(InferenceOptions, total=False):
    max_concurrent_batches: int


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def pad_values(pad_tokens: Mapping[str, Any] | None, pad_token: Any) -> dict[str, Any]:
    """Per-feature pad values from ``pad_tokens`` or the README's spelling ``pad_token``."""
    if pad_tokens is not None and pad_token is not None:
        raise TypeError("give pad_tokens or pad_token, not both")
    given = pad_tokens if pad_tokens is not None else pad_token
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise TypeError(
            "pad_tokens must map feature names to pad values, e.g. {'input_ids': 0}; "
            f"got {given!r}"
        )
    return dict(given)


def make_plan(
    pad_tokens: Mapping[str, Any] | None,
    pad_token: Any,
    padding_side: str,
    spread_kwargs: bool,
    device: Any,
) -> tuple[FeatureSchema, FeaturesPlan]:
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    schema = FeatureSchema()
    plan = FeaturesPlan(
        schema,
        pad_values(pad_tokens, pad_token),
        "left" if padding_side == "left" else "right",
        flag("spread_kwargs", spread_kwargs),
        device,
    )
    return schema, plan


def call_features(
    schema: FeatureSchema, positional: Mapping[str, Any] | None, keywords: dict[str, Any]
) -> tuple[Any, list[int]]:
    """The checked features of one call given as ``f(features)`` or ``f(**features)``."""
    if positional is not None and keywords:
        raise TypeError("give the features as one dict or as keyword arguments, not both")
    return schema.check(positional if positional is not None else keywords)


def plan_from(options: Mapping[str, Any]) -> tuple[FeatureSchema, FeaturesPlan]:
    """A fresh schema and plan from the padding options (each processor learns its own
    feature schema from its first call)."""
    return make_plan(
        options.get("pad_tokens"),
        options.get("pad_token"),
        options.get("padding_side", "right"),
        options.get("spread_kwargs", False),
        options.get("device"),
    )


class FeatureCalls(Managed):
    """An inference processor: each call passes features, and gets its own output rows."""

    _schema: FeatureSchema
    _plan: FeaturesPlan

    async def _await_features(
        self,
        features: Mapping[str, Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        priority: int = 0,
        **keywords: Any,
    ) -> Any:
        """Awaits the output rows for this call's features without blocking the event loop."""
        _owner = self._take_pin()  # a method's instance lives until this call returns
        call, lengths = call_features(self._schema, features, keywords)
        parts = await await_call(self._backend, call, timeout, priority, call.rows, lengths)
        return merge_parts(parts, self._plan.left)
