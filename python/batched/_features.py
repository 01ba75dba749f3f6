"""Features for the inference flavours: checking a call's features, collating a batch of them
with padding, and slicing the batched output back into each call's rows.

This module never imports numpy or torch: it recognises their values only once the program
has imported them itself (it looks them up in ``sys.modules``).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from batched import _core

PaddingSide = Literal["left", "right"]


def _torch() -> Any:
    return sys.modules.get("torch")


def _numpy() -> Any:
    return sys.modules.get("numpy")


def _is_tensor(value: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _is_ndarray(value: object) -> bool:
    numpy = _numpy()
    return numpy is not None and isinstance(value, numpy.ndarray)


def _library(value: object) -> str | None:
    if _is_ndarray(value):
        return "numpy"
    if _is_tensor(value):
        return "torch"
    return None


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What every call must agree on for one feature, fixed by the first call."""

    library: str
    dtype: Any
    # Shape of each row after its first (padded) axis; None for rows without such an axis.
    trailing: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class CallFeatures:
    """One call's features, checked: each value is an array or tensor of shape (rows, ...) or
    a list of `rows` per-row arrays or tensors."""

    features: dict[str, Any]
    rows: int


class FeatureSchema:
    """The feature names, libraries, dtypes and row shapes of the first call, which every later
    call must match so that batches can be stacked."""

    def __init__(self) -> None:
        self.specs: dict[str, FeatureSpec] | None = None
        # The device of the first call's tensors: a batch is padded and stacked on one device.
        self.device: str | None = None
        # Once a call of dense values passed: per feature, the exact type, dtype, dimensions and
        # trailing shape that let a later call skip the full check, and the tensors' device.
        self._dense: dict[str, tuple[Any, Any, int, tuple[int, ...]]] | None = None
        self._device_object: Any = None

    def check(self, features: Mapping[str, Any]) -> tuple[CallFeatures, list[int]]:
        """Checks one call's features; returns them with each row's length (the longest first
        axis among its padded features, 1 when no feature has one)."""
        quick = self._check_dense(features)
        if quick is not None:
            return quick
        checked = self._check(features)
        if self._dense is None:
            self._remember_dense(features)
        return checked

    def _check_dense(self, features: Mapping[str, Any]) -> tuple[CallFeatures, list[int]] | None:
        """The check of a call shaped like the remembered one, in a few comparisons; None when
        anything differs (the full check then finds and names the difference)."""
        dense = self._dense
        if dense is None or type(features) is not dict or len(features) != len(dense):
            return None
        count = -1
        longest = -1  # stays -1 when no feature has a padded axis
        for name, value in features.items():
            expected = dense.get(name)
            if expected is None:
                return None
            kind, dtype, ndim, trailing = expected
            if type(value) is not kind or value.dtype != dtype:
                return None
            shape = value.shape
            if len(shape) != ndim or (ndim > 1 and tuple(shape[2:]) != trailing):
                return None
            if count != shape[0]:
                if count != -1:
                    return None
                count = int(shape[0])
            if ndim > 1:
                longest = max(longest, int(shape[1]))
            if self._device_object is not None and value.device != self._device_object:
                return None
        if count <= 0:
            return None
        return CallFeatures(dict(features), count), [longest if longest >= 0 else 1] * count

    def _remember_dense(self, features: Mapping[str, Any]) -> None:
        values = list(features.values())
        if not all(_is_array(value) for value in values):
            return
        self._dense = {
            name: (type(value), value.dtype, value.ndim, tuple(value.shape[2:]))
            for name, value in features.items()
        }
        if _is_tensor(values[0]):
            self._device_object = values[0].device

    def _check(self, features: Mapping[str, Any]) -> tuple[CallFeatures, list[int]]:
        if not isinstance(features, Mapping) or not features:
            raise TypeError(
                "inference functions take a non-empty dict of features, e.g. "
                "f({'input_ids': ids}) or f(input_ids=ids)"
            )
        specs: dict[str, FeatureSpec] = {}
        rows: dict[str, int] = {}
        row_lengths: list[int] | None = None
        devices: set[str] = set()
        for name, value in features.items():
            spec, count, lengths, device = _describe(name, value)
            specs[name] = spec
            rows[name] = count
            if device is not None:
                devices.add(device)
            if lengths is not None:
                row_lengths = (
                    lengths
                    if row_lengths is None
                    else [max(a, b) for a, b in zip(row_lengths, lengths, strict=False)]
                )
        if len(set(rows.values())) > 1:
            counts = ", ".join(f"{name}: {count}" for name, count in rows.items())
            raise ValueError(
                f"all features of one call must have the same number of rows; got {counts}"
            )
        libraries = {spec.library for spec in specs.values()}
        if len(libraries) > 1:
            raise TypeError(
                "a call mixes numpy arrays and torch tensors; use one library for all features"
            )
        if len(devices) > 1:
            raise ValueError(
                f"a call's tensors are on different devices ({', '.join(sorted(devices))}); "
                "move them to one device"
            )
        count = next(iter(rows.values()))
        if count == 0:
            raise ValueError("a call needs at least one row of features")
        self._match(specs)
        self._match_device(next(iter(devices), None))
        return CallFeatures(dict(features), count), row_lengths or [1] * count

    def _match_device(self, device: str | None) -> None:
        if device is None:
            return
        if self.device is None:
            self.device = device
        elif device != self.device:
            raise ValueError(
                f"this call's tensors are on {device} but the first call's were on "
                f"{self.device}; a batch is stacked on one device, so send every call's "
                "tensors from the same device"
            )

    def _match(self, specs: dict[str, FeatureSpec]) -> None:
        if self.specs is None:
            self.specs = specs
            return
        expected = set(self.specs)
        missing, extra = expected - set(specs), set(specs) - expected
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {sorted(missing)}")
            if extra:
                parts.append(f"unexpected {sorted(extra)}")
            raise ValueError(
                f"this call's features differ from the first call's ({sorted(expected)}): "
                + ", ".join(parts)
            )
        for name, spec in specs.items():
            first = self.specs[name]
            if spec.library != first.library:
                raise TypeError(
                    f"feature {name!r} is a {spec.library} value but was {first.library} in the "
                    "first call; use one library throughout"
                )
            if spec.dtype != first.dtype:
                raise TypeError(
                    f"feature {name!r} has dtype {spec.dtype} but had {first.dtype} in the first "
                    "call; convert it so that batches keep one dtype"
                )
            if spec.trailing != first.trailing:
                raise ValueError(
                    f"feature {name!r} has {_row_shape(spec.trailing)} but had "
                    f"{_row_shape(first.trailing)} in the first call"
                )


def _row_shape(trailing: tuple[int, ...] | None) -> str:
    if trailing is None:
        return "one value per row (no axis to pad)"
    return f"rows of shape ({', '.join(['length', *map(str, trailing)])})"


def _row_library(name: str, row: object) -> str:
    library = _library(row)
    if library is None:
        raise TypeError(
            f"feature {name!r} holds a {type(row).__name__}; rows must be numpy arrays or "
            "torch tensors"
        )
    return library


def _describe(name: str, value: Any) -> tuple[FeatureSpec, int, list[int] | None, str | None]:
    """Spec, row count, row lengths (None without a padded axis) and device of one feature."""
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"feature {name!r} is an empty list; give at least one row")
        libraries = {_row_library(name, row) for row in value}
        if len(libraries) > 1:
            raise TypeError(f"feature {name!r} mixes numpy arrays and torch tensors")
        first = value[0]
        if any(row.ndim == 0 for row in value):
            raise ValueError(f"feature {name!r} has 0-d rows; each row needs a length axis")
        trailing = tuple(first.shape[1:])
        for row in value:
            if tuple(row.shape[1:]) != trailing or row.dtype != first.dtype:
                raise ValueError(
                    f"feature {name!r} has rows of different trailing shapes or dtypes: "
                    f"{tuple(first.shape)} {first.dtype} and {tuple(row.shape)} {row.dtype}"
                )
        devices = {str(row.device) for row in value} if _is_tensor(first) else set()
        if len(devices) > 1:
            raise ValueError(f"feature {name!r} has rows on different devices: {sorted(devices)}")
        spec = FeatureSpec(libraries.pop(), first.dtype, trailing)
        return spec, len(value), [int(row.shape[0]) for row in value], next(iter(devices), None)
    library = _library(value)
    if library is None:
        raise TypeError(
            f"feature {name!r} must be a numpy array, a torch tensor or a list of them; got "
            f"{type(value).__name__}"
        )
    if value.ndim == 0:
        raise ValueError(f"feature {name!r} is 0-d; its first axis must count the rows")
    device = str(value.device) if library == "torch" else None
    if value.ndim == 1:
        return FeatureSpec(library, value.dtype, None), int(value.shape[0]), None, device
    lengths = [int(value.shape[1])] * int(value.shape[0])
    return (
        FeatureSpec(library, value.dtype, tuple(value.shape[2:])),
        int(value.shape[0]),
        lengths,
        device,
    )


class FeaturesPlan:
    """Collates the segments of a batch into one dict of features and splits the output."""

    def __init__(
        self,
        schema: FeatureSchema,
        pad_tokens: Mapping[str, Any],
        padding_side: PaddingSide,
        spread_kwargs: bool,
        device: Any,
    ) -> None:
        self._schema = schema
        self._pad_tokens = dict(pad_tokens)
        self.left = padding_side == "left"
        self._spread = spread_kwargs
        self._device = device

    def arguments(self, batch: _core.Batch) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
        segments = batch.segments()
        sizes = [stop - start for _, start, stop in segments]
        specs = self._schema.specs or {}
        features = {name: self._collate(name, spec, segments) for name, spec in specs.items()}
        lengths = batch.lengths()
        if any(spec.trailing is not None for spec in specs.values()):
            batch.record_padding(sum(lengths), len(lengths) * max(lengths))
        if self._spread:
            return (), features, sizes
        return (features,), {}, sizes

    def settle(self, batch: _core.Batch, output: Any, state: Any) -> None:
        sizes: list[int] = state
        batch.complete_segments(split_output(output, sizes))

    def _collate(self, name: str, spec: FeatureSpec, segments: list[tuple[Any, int, int]]) -> Any:
        torch = spec.library == "torch"
        if torch and self._device is None and spec.trailing is not None:
            # One C call pads and stacks every row, equal lengths included, instead of a fill
            # and an indexed copy per segment.
            side = "left" if self.left else "right"
            return _torch().nn.utils.rnn.pad_sequence(
                _rows(name, segments),
                batch_first=True,
                padding_value=self._pad_tokens.get(name, 0),
                padding_side=side,
            )
        pieces = [payload.features[name][start:stop] for payload, start, stop in segments]
        if spec.trailing is None:
            return self._to_device(_concatenate(pieces, torch))
        dense = all(not isinstance(piece, list | tuple) for piece in pieces)
        longest = max(_row_length(piece) for piece in pieces)
        if dense and all(piece.shape[1] == longest for piece in pieces):
            return self._to_device(_concatenate(pieces, torch))
        pad = self._pad_tokens.get(name, 0)
        count = sum(len(piece) for piece in pieces)
        shape = (count, longest, *spec.trailing)
        out = _full(shape, pad, spec.dtype, pieces, torch, pinned=self._device is not None)
        offset = 0
        for piece in pieces:
            if isinstance(piece, list | tuple):
                for row in piece:
                    self._place(out, offset, 1, row, longest, row_axis=0)
                    offset += 1
            else:
                self._place(out, offset, len(piece), piece, longest, row_axis=1)
                offset += len(piece)
        return self._to_device(out)

    def _place(
        self, out: Any, offset: int, count: int, value: Any, longest: int, row_axis: int
    ) -> None:
        length = value.shape[row_axis]
        span = slice(longest - length, longest) if self.left else slice(0, length)
        if row_axis == 0:
            out[offset, span] = value
        else:
            out[offset : offset + count, span] = value

    def _to_device(self, value: Any) -> Any:
        if self._device is None or not _is_tensor(value):
            return value
        return value.to(self._device, non_blocking=True)


def _rows(name: str, segments: list[tuple[Any, int, int]]) -> list[Any]:
    """Every row of feature `name` in the batch, in order, as views (no copies)."""
    rows: list[Any] = []
    for payload, start, stop in segments:
        value = payload.features[name]
        if isinstance(value, list | tuple):
            rows.extend(value[start:stop])
        elif stop - start == 1:
            rows.append(value[start])
        else:
            rows.extend(value[start:stop].unbind(0))
    return rows


def _row_length(piece: Any) -> int:
    if isinstance(piece, list | tuple):
        return max(int(row.shape[0]) for row in piece)
    return int(piece.shape[1])


def _concatenate(pieces: list[Any], torch: bool) -> Any:
    if len(pieces) == 1 and not isinstance(pieces[0], list | tuple):
        return pieces[0]
    flat: list[Any] = []
    for piece in pieces:
        if isinstance(piece, list | tuple):
            flat.extend(row[None] for row in piece)
        else:
            flat.append(piece)
    if torch:
        return _torch().cat(flat)
    return _numpy().concatenate(flat)


def _full(
    shape: tuple[int, ...], pad: Any, dtype: Any, pieces: list[Any], torch: bool, pinned: bool
) -> Any:
    if not torch:
        return _numpy().full(shape, pad, dtype=dtype)
    first = pieces[0][0] if isinstance(pieces[0], list | tuple) else pieces[0]
    on_cpu = first.device.type == "cpu"
    # Pinned memory makes the one host-to-device copy of the batch asynchronous.
    pin = pinned and on_cpu and _torch().cuda.is_available()
    return _torch().full(shape, pad, dtype=dtype, device=first.device, pin_memory=pin)


def _leaves_rows(output: Any) -> int:
    if isinstance(output, Mapping):
        counts = {_leaves_rows(value) for value in output.values()}
    elif isinstance(output, list | tuple) and not _is_array(output):
        counts = {_leaves_rows(value) for value in output}
    else:
        if not _is_array(output) or output.ndim == 0:
            raise ValueError(
                f"an inference function must return an array or tensor with one row per item "
                f"(or a list, tuple or dict of them); got {type(output).__name__}"
            )
        return int(output.shape[0])
    if len(counts) != 1:
        raise ValueError(f"the outputs returned have different numbers of rows: {sorted(counts)}")
    return counts.pop()


def _is_array(value: object) -> bool:
    return _is_ndarray(value) or _is_tensor(value)


def _rebuild(container: list[Any] | tuple[Any, ...], values: list[Any]) -> Any:
    """A container of the same type as `container` holding `values` (namedtuples included)."""
    if hasattr(container, "_fields"):
        return type(container)(*values)
    return type(container)(values)


def split_output(output: Any, sizes: Sequence[int]) -> list[Any]:
    """Slices (views, no copies) of the batched output, one per segment of `sizes` rows."""
    total = sum(sizes)
    rows = _leaves_rows(output)
    if rows != total:
        raise ValueError(
            f"the inference function returned {rows} rows for a batch of {total} items; "
            "return one row per item"
        )
    return _split(output, sizes)


def _split(output: Any, sizes: Sequence[int]) -> list[Any]:
    """`output` cut into one part per segment, of `sizes` rows each, in order."""
    if isinstance(output, Mapping):
        columns = {key: _split(value, sizes) for key, value in output.items()}
        return [{key: column[i] for key, column in columns.items()} for i in range(len(sizes))]
    if isinstance(output, list | tuple) and not _is_array(output):
        parts = [_split(value, sizes) for value in output]
        return [_rebuild(output, [part[i] for part in parts]) for i in range(len(sizes))]
    if _is_tensor(output) and len(sizes) > 1:
        # One C call for every segment's view (Tensor.split adds a Python layer around it).
        return list(output.split_with_sizes(list(sizes)))
    ends = list(itertools.accumulate(sizes))
    return [output[end - size : end] for size, end in zip(sizes, ends, strict=True)]


def merge_parts(parts: list[Any], left: bool) -> Any:
    """Joins a call's output slices (more than one when the call spanned several batches).

    Per-position outputs of different batches have different padded widths: the narrower are
    padded with zeros, on the padding side, to the widest.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, Mapping):
        return {key: merge_parts([part[key] for part in parts], left) for key in first}
    if isinstance(first, list | tuple) and not _is_array(first):
        return _rebuild(
            first, [merge_parts(list(group), left) for group in zip(*parts, strict=True)]
        )
    torch = _is_tensor(first)
    if first.ndim >= 2:
        width = max(int(part.shape[1]) for part in parts)
        parts = [_widen(part, width, left, torch) for part in parts]
    return _concatenate(parts, torch)


def _widen(part: Any, width: int, left: bool, torch: bool) -> Any:
    missing = width - int(part.shape[1])
    if missing == 0:
        return part
    shape = (part.shape[0], missing, *part.shape[2:])
    if torch:
        zeros = _torch().zeros(shape, dtype=part.dtype, device=part.device)
        return _torch().cat([zeros, part] if left else [part, zeros], dim=1)
    zeros = _numpy().zeros(shape, dtype=part.dtype)
    return _numpy().concatenate([zeros, part] if left else [part, zeros], axis=1)
