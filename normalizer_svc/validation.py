"""Validation of raw model outputs (before normalising) and of findings (before storing them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from normalizer_svc.builtin.findings import FINDING_KINDS, FindingDraft
from normalizer_svc.builtin.model_input import ModelInputLike
from sidecar_core.errors import PermanentError
from sidecar_core.registry import OutputSpec

# Kinds whose geometry lives on one image: they must reference it.
_SPATIAL = {"box", "polygon", "point", "mask"}
_NP_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
              "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
              "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_}


class InvalidResult(PermanentError):
    """A model or normaliser result that breaks the contract (ai_result.invalid); not retried."""


def validate_outputs(model: str, specs: Sequence[OutputSpec],
                     outputs: Mapping[str, np.ndarray]) -> None:
    """Raises InvalidResult unless every expected output is present and well-formed."""
    missing = [s.name for s in specs if s.name not in outputs]
    if missing:
        raise InvalidResult(f"{model} returned no {', '.join(missing)} (got "
                            f"{', '.join(sorted(outputs)) or 'no outputs'})")
    for spec in specs:
        array = np.asarray(outputs[spec.name])
        where = f"output {spec.name} of {model}"
        expected = _NP_DTYPES.get(spec.datatype)
        if spec.datatype == "BYTES":
            if array.dtype.kind not in "OSU":
                raise InvalidResult(f"{where} is {array.dtype}, expected BYTES")
        elif expected is not None and array.dtype != np.dtype(expected):
            raise InvalidResult(f"{where} is {array.dtype}, expected {spec.datatype} "
                                f"({np.dtype(expected)})")
        if array.ndim != spec.rank:
            raise InvalidResult(f"{where} has shape {list(array.shape)} (rank {array.ndim}), "
                                f"expected rank {spec.rank}")
        if spec.trailing_dims:
            tail = tuple(array.shape[array.ndim - len(spec.trailing_dims):])
            if tail != spec.trailing_dims:
                want = ["N"] * (spec.rank - len(spec.trailing_dims)) + list(spec.trailing_dims)
                raise InvalidResult(f"{where} has shape {list(array.shape)}, expected "
                                    f"[{', '.join(str(d) for d in want)}]")
        if spec.non_empty and array.size == 0:
            raise InvalidResult(f"{where} is empty (shape {list(array.shape)}); it must have "
                                f"values")
        if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise InvalidResult(f"{where} contains {bad} NaN/Inf value{'s' * (bad != 1)}")
        if spec.same_length_as is not None:
            other = np.asarray(outputs[spec.same_length_as])
            if array.ndim and other.ndim and array.shape[0] != other.shape[0]:
                raise InvalidResult(f"{where} has {array.shape[0]} rows but "
                                    f"{spec.same_length_as} has {other.shape[0]}")


def validate_findings(findings: Sequence[FindingDraft], model_input: ModelInputLike,
                      series_uid: str | None = None, model_name: str | None = None) -> None:
    """Raises InvalidResult naming the first finding and field that breaks the schema.

    `series_uid` and `model_name`, when given, are what every finding must claim.
    """
    slices, rows, columns = (int(v) for v in np.shape(model_input.volume))
    sops = [str(s) for s in model_input.sop_instance_uids]
    frames = {(str(s), int(f)) for s, f in zip(sops, model_input.frames, strict=False)}
    for index, f in enumerate(findings):
        problem = _finding_problem(f, slices, rows, columns, set(sops), frames, series_uid,
                                   model_name)
        if problem:
            label = str(getattr(f, "label", "") or "").strip()
            raise InvalidResult(f"finding {index + 1}" + (f" ({label})" if label else "")
                                + f": {problem}")


def _finding_problem(f: FindingDraft, slices: int, rows: int, columns: int, sops: set[str],
                     frames: set[tuple[str, int]], series_uid: str | None,
                     model_name: str | None) -> str | None:
    if not isinstance(f.label, str) or not f.label.strip():
        return "label is empty"
    if f.kind not in FINDING_KINDS:
        return f"kind {f.kind!r} is not one of {', '.join(FINDING_KINDS)}"
    if not _real(f.confidence) or not 0.0 <= float(f.confidence) <= 1.0:
        return f"confidence {f.confidence!r} is not a finite number in 0..1"
    if not f.model_name:
        return "model_name is empty"
    if model_name and f.model_name != model_name:
        return f"model_name {f.model_name!r} is not the model of the run ({model_name!r})"
    if series_uid and f.series_instance_uid and f.series_instance_uid != series_uid:
        return f"series {f.series_instance_uid} is not the series of the run ({series_uid})"
    if f.sop_instance_uid:
        if f.sop_instance_uid not in sops:
            return f"SOPInstanceUID {f.sop_instance_uid} does not belong to the series"
        if f.frame is not None and (f.sop_instance_uid, int(f.frame)) not in frames:
            return f"frame {f.frame} does not exist in instance {f.sop_instance_uid}"
    elif f.kind in _SPATIAL:
        return f"a {f.kind} finding must reference an image (SOPInstanceUID is empty)"
    if f.bbox_px is not None:
        problem = _bbox_problem(f.bbox_px, rows, columns)
        if problem:
            return problem
    elif f.kind == "box":
        return "a box finding has no bbox_px"
    if f.center_mm is not None and (len(f.center_mm) != 3 or not all(_real(v)
                                                                     for v in f.center_mm)):
        return f"center_mm {list(f.center_mm)} must be 3 finite numbers [x, y, z] mm"
    points = f.properties.get("points_px") if isinstance(f.properties, dict) else None
    if points is not None:
        problem = _points_problem(points, rows, columns)
        if problem:
            return problem
    elif f.kind in {"polygon", "point"}:
        return f"a {f.kind} finding has no points_px"
    if f.mask is not None:
        problem = _mask_problem(f.mask, slices, rows, columns)
        if problem:
            return problem
    elif f.kind == "mask":
        return "a mask finding has no mask"
    for name, value in (f.measurements or {}).items():
        if not _real(value):
            return f"measurement {name} = {value!r} is not a finite number"
    return None


def _bbox_problem(bbox: Sequence[Any], rows: int, columns: int) -> str | None:
    if len(bbox) != 4 or not all(_real(v) for v in bbox):
        return f"bbox_px {list(bbox)} must be 4 finite numbers [x_min, y_min, x_max, y_max]"
    x_min, y_min, x_max, y_max = (float(v) for v in bbox)
    if not (0 <= x_min <= x_max <= columns and 0 <= y_min <= y_max <= rows):
        return (f"bbox_px {_fmt(bbox)} is not inside the {columns}×{rows} image "
                f"(need 0 ≤ x_min ≤ x_max ≤ {columns} and 0 ≤ y_min ≤ y_max ≤ {rows})")
    return None


def _points_problem(points: Sequence[Any], rows: int, columns: int) -> str | None:
    if len(points) < 2 or len(points) % 2 or not all(_real(v) for v in points):
        return f"points_px must be finite [x0, y0, x1, y1, ...] pairs, got {len(points)} values"
    xs, ys = [float(v) for v in points[0::2]], [float(v) for v in points[1::2]]
    if min(xs) < 0 or max(xs) > columns or min(ys) < 0 or max(ys) > rows:
        return f"points_px leave the {columns}×{rows} image"
    return None


def _mask_problem(mask: Any, slices: int, rows: int, columns: int) -> str | None:
    array = np.asarray(mask)
    if array.shape not in {(rows, columns), (slices, rows, columns)}:
        return (f"mask shape {list(array.shape)} matches neither [{rows}, {columns}] nor "
                f"[{slices}, {rows}, {columns}]")
    if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
        return "mask values must be 0 or 1"
    return None


def _real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and \
        not isinstance(value, bool) and math.isfinite(float(value))


def _fmt(values: Sequence[Any]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"
