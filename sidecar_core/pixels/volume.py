"""The model-ready input of docs/model-input.md: build it from a series, save and load the npz."""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from sidecar_core import model_input as model_input_format
from sidecar_core.model_input import read_arrays
from sidecar_core.pixels.errors import (
    DuplicateSlicePositions,
    InconsistentOrientation,
    ModelInputFormatError,
    MonochromeRequired,
    PartialGeometry,
)
from sidecar_core.pixels.ordering import BY_SLICE_NORMAL, OrderingIssue
from sidecar_core.pixels.series import DecodedSeries, decode_series

MODEL_INPUT_FORMAT = model_input_format.FORMAT
MODEL_INPUT_CONTENT_TYPE = "application/x-npz"
MODEL_INPUT_ASSET_KIND = "model_input"
DEFAULT_COMPRESS_LEVEL = 1  # deflate level: 1 is ~8x faster than numpy's default 6, ~15% larger

_STRICT_ISSUES: dict[OrderingIssue, type[Exception]] = {
    OrderingIssue.INCONSISTENT_ORIENTATION: InconsistentOrientation,
    OrderingIssue.PARTIAL_GEOMETRY: PartialGeometry,
    OrderingIssue.DUPLICATE_POSITIONS: DuplicateSlicePositions,
}


@dataclass(frozen=True, eq=False)
class ModelInput:
    """One series as models read it (format ``sidecar.model_input.v1``)."""

    volume: np.ndarray  # float32 [Z, Y, X], physical units
    positions: np.ndarray  # float64 [Z, 3], ImagePositionPatient, NaN where absent
    orientation: np.ndarray  # float64 [6], NaN where absent or not shared by all slices
    pixel_spacing: np.ndarray  # float64 [2], (row spacing, column spacing) mm
    slice_spacing: float  # median gap along the normal, NaN for one slice or no geometry
    sop_instance_uids: tuple[str, ...]
    frames: np.ndarray  # int32 [Z], 1-based frame number inside the instance
    modality: str
    laterality: tuple[str, ...]
    view_position: tuple[str, ...]
    format: str = MODEL_INPUT_FORMAT

    @property
    def spacing_zyx(self) -> np.ndarray:
        """float32 ``[slice, row, column]`` spacing in mm, the reference models' SPACING."""
        return np.array([self.slice_spacing, *self.pixel_spacing], dtype=np.float32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelInput):
            return NotImplemented
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray):
                mine, theirs = np.asarray(mine), np.asarray(theirs)
                if mine.dtype != theirs.dtype or not np.array_equal(
                    mine, theirs, equal_nan=mine.dtype.kind == "f"
                ):
                    return False
            elif isinstance(mine, float) and math.isnan(mine) and math.isnan(theirs):
                continue
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


def build_model_input(datasets: Sequence[Dataset], *, strict: bool = True) -> ModelInput:
    """Decode, order and stack one series into its model-ready input."""
    return model_input_from_series(decode_series(datasets), strict=strict)


def model_input_from_series(series: DecodedSeries, *, strict: bool = True) -> ModelInput:
    """The model-ready input of an already decoded series (shared with asset rendering).

    With ``strict`` a 3-D series whose geometry does not describe one volume (mixed
    orientation, some slices without position, two slices at one place) raises the matching
    :class:`InconsistentGeometry` error instead of feeding a model a scrambled volume.
    """
    image = series.image
    if image.is_color:
        raise MonochromeRequired(f"{image.photometric_interpretation} pixels have no physical unit")
    if strict and not series.is_projection:
        for issue, error in _STRICT_ISSUES.items():
            if issue in series.order.issues:
                raise error(f"series geometry: {issue.value}")
    slices = series.slices
    positions = np.array(
        [s.position if s.position is not None else (math.nan,) * 3 for s in slices],
        dtype=np.float64,
    ).reshape(len(slices), 3)
    orientations = {s.orientation for s in slices}
    shared = orientations.pop() if len(orientations) == 1 else None
    geometric = series.order.method == BY_SLICE_NORMAL and not series.is_projection
    return ModelInput(
        volume=image.frames,
        positions=positions,
        orientation=np.array(shared if shared is not None else (math.nan,) * 6, np.float64),
        pixel_spacing=np.array(series.pixel_spacing or (math.nan, math.nan), np.float64),
        slice_spacing=series.order.slice_spacing if geometric else math.nan,
        sop_instance_uids=tuple(s.sop_instance_uid for s in slices),
        frames=np.array([s.frame_number for s in slices], dtype=np.int32),
        modality=series.modality,
        laterality=tuple(s.laterality for s in slices),
        view_position=tuple(s.view_position for s in slices),
    )


def save_model_input(
    model_input: ModelInput, *, compress_level: int = DEFAULT_COMPRESS_LEVEL
) -> bytes:
    """Serialise to the npz layout ``np.savez_compressed`` writes (``np.load`` reads it).

    Written through zipfile directly only to choose the deflate level: numpy's default (6)
    takes ~8x longer on CT volumes. ``compress_level=0`` stores the arrays uncompressed.
    """
    arrays = _to_arrays(model_input)
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress_level > 0 else zipfile.ZIP_STORED
    level = compress_level if compress_level > 0 else None
    with zipfile.ZipFile(buffer, "w", compression=method, compresslevel=level) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def load_model_input(data: bytes) -> ModelInput:
    """Parse and validate a ``sidecar.model_input.v1`` archive."""
    try:
        arrays = read_arrays(data)
    except model_input_format.ModelInputFormatError as exc:
        raise ModelInputFormatError(str(exc)) from exc
    fmt = str(arrays["format"])
    model_input = ModelInput(
        volume=np.array(arrays["volume"], dtype=np.float32),  # writable, whatever was stored
        positions=arrays["positions"],
        orientation=arrays["orientation"],
        pixel_spacing=arrays["pixel_spacing"],
        slice_spacing=float(arrays["slice_spacing"]),
        sop_instance_uids=tuple(str(v) for v in arrays["sop_instance_uids"]),
        frames=arrays["frames"],
        modality=str(arrays["modality"]),
        laterality=tuple(str(v) for v in arrays["laterality"]),
        view_position=tuple(str(v) for v in arrays["view_position"]),
        format=fmt,
    )
    _validate(model_input)
    return model_input


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=np.str_) if values else np.array([], dtype="<U1")


def compact_volume(volume: np.ndarray) -> np.ndarray:
    """int16 when every voxel is an integer in int16 range (lossless: CT HU, most MR/MG),
    else float32; readers always load float32. Halves the bytes to deflate and store."""
    v = np.ascontiguousarray(volume, dtype=np.float32)
    if not v.size:
        return v
    # Slice by slice, so that both passes run in cache: a value out of int16 range,
    # fractional or not finite does not survive the round trip (NaN never compares equal).
    as_int = np.empty(v.shape, dtype=np.int16)
    shape = (v.shape[0] if v.ndim else 1, -1)
    rows, out = v.reshape(shape), as_int.reshape(shape)
    with np.errstate(invalid="ignore"):
        for i in range(rows.shape[0]):
            np.copyto(out[i], rows[i], casting="unsafe")
            if not np.array_equal(out[i], rows[i]):
                return v
    return as_int


def _to_arrays(model_input: ModelInput) -> dict[str, np.ndarray]:
    _validate(model_input)
    values: dict[str, Any] = {
        "format": np.array(model_input.format),
        "volume": compact_volume(model_input.volume),
        "positions": np.asarray(model_input.positions, dtype=np.float64),
        "orientation": np.asarray(model_input.orientation, dtype=np.float64),
        "pixel_spacing": np.asarray(model_input.pixel_spacing, dtype=np.float64),
        "slice_spacing": np.array(model_input.slice_spacing, dtype=np.float64),
        "sop_instance_uids": _strings(model_input.sop_instance_uids),
        "frames": np.asarray(model_input.frames, dtype=np.int32),
        "modality": np.array(model_input.modality),
        "laterality": _strings(model_input.laterality),
        "view_position": _strings(model_input.view_position),
    }
    return values


def _validate(mi: ModelInput) -> None:
    z = mi.volume.shape[0] if mi.volume.ndim == 3 else -1
    checks = {
        "volume is float32 [Z, Y, X]": mi.volume.ndim == 3 and mi.volume.dtype == np.float32,
        "positions is float64 [Z, 3]": mi.positions.shape == (z, 3)
        and mi.positions.dtype == np.float64,
        "orientation is float64 [6]": mi.orientation.shape == (6,),
        "pixel_spacing is float64 [2]": mi.pixel_spacing.shape == (2,),
        "frames is int32 [Z]": mi.frames.shape == (z,) and mi.frames.dtype == np.int32,
        "sop_instance_uids has Z entries": len(mi.sop_instance_uids) == z,
        "laterality has Z entries": len(mi.laterality) == z,
        "view_position has Z entries": len(mi.view_position) == z,
    }
    broken = [name for name, ok in checks.items() if not ok]
    if broken:
        raise ModelInputFormatError("; ".join(broken))
