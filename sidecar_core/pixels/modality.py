"""The modality transform (Rescale Slope/Intercept or Modality LUT): stored values to physical."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from sidecar_core.pixels.attributes import first_float, frame_value
from sidecar_core.pixels.errors import InvalidPixelDescription, InvalidVoiLut

NONE = "none"
RESCALE = "rescale"
LUT = "lut"


@dataclass(frozen=True)
class ModalityTransform:
    """How stored values became physical ones; slopes/intercepts are per frame."""

    kind: str  # "none", "rescale" or "lut" (Modality LUT Sequence)
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    rescale_type: str = ""


def modality_transform(ds: Dataset, n_frames: int) -> ModalityTransform:
    """Find the modality transform of each frame (PS3.3 C.11.1, enhanced C.7.6.16.2.9)."""
    if "ModalityLUTSequence" in ds and not _has_rescale(ds, 0):
        return ModalityTransform(LUT, (1.0,) * n_frames, (0.0,) * n_frames)
    slopes: list[float] = []
    intercepts: list[float] = []
    for index in range(n_frames):
        slope = first_float(
            frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
        )
        intercept = first_float(
            frame_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        if slope is None and str(ds.get("Modality", "")).upper() == "RTDOSE":
            slope = first_float(ds.get("DoseGridScaling"))
        slopes.append(1.0 if slope is None else slope)
        intercepts.append(0.0 if intercept is None else intercept)
    if not all(np.isfinite(slopes + intercepts)):
        raise InvalidPixelDescription("Rescale Slope/Intercept is not a finite number")
    identity = all(s == 1.0 for s in slopes) and all(i == 0.0 for i in intercepts)
    rescale_type = frame_value(ds, 0, "PixelValueTransformationSequence", "RescaleType")
    return ModalityTransform(
        NONE if identity else RESCALE,
        tuple(slopes),
        tuple(intercepts),
        str(rescale_type or ("GY" if ds.get("Modality") == "RTDOSE" else "")),
    )


def _has_rescale(ds: Dataset, index: int) -> bool:
    return frame_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope") is not None


def to_physical(stored: np.ndarray, ds: Dataset, transform: ModalityTransform, *,
                little_endian: bool = True) -> np.ndarray:
    """Apply the transform to stored frames ``[N, Y, X]``, returning float32 physical values."""
    if transform.kind == LUT:
        return _modality_lut(stored, ds, little_endian)
    values = stored.astype(np.float32)
    if transform.kind == NONE:
        return values
    slopes = np.asarray(transform.slopes, dtype=np.float32)
    intercepts = np.asarray(transform.intercepts, dtype=np.float32)
    if np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]):
        if slopes[0] != 1.0:
            values *= slopes[0]
        if intercepts[0] != 0.0:
            values += intercepts[0]
        return values
    values *= slopes[:, None, None]
    values += intercepts[:, None, None]
    return values


def _modality_lut(stored: np.ndarray, ds: Dataset, little_endian: bool) -> np.ndarray:
    """The first Modality LUT Sequence table (PS3.3 C.11.1.1): stored value ``first + i`` reads
    entry ``i``; values outside the table read its first or last entry.

    The table is read as VOI LUT tables are (one reader for LUT Descriptor and LUT Data): entries
    of any depth from 8 to 16 bits, in US values or OW words. pydicom's ``apply_modality_lut``
    reads only 8- and 16-bit entries and raises TypeError on, say, a 12-bit table.
    """
    from sidecar_core.pixels.voi_lut import read_voi_lut  # that module builds on this one

    try:
        table = read_voi_lut(ds.ModalityLUTSequence[0],
                             signed_input=int(ds.get("PixelRepresentation", 0) or 0) == 1,
                             little_endian=little_endian)
    except (InvalidVoiLut, IndexError) as exc:
        raise InvalidPixelDescription(f"unusable Modality LUT Sequence: {exc}") from exc
    index = stored.astype(np.int64) - table.first_mapped
    np.clip(index, 0, table.n_entries - 1, out=index)
    return table.entries.astype(np.float32)[index]
