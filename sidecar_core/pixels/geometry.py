"""Per-slice geometry and identity (IPP, IOP, spacing, laterality) of classic or enhanced DICOM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from pydicom.dataset import Dataset

from sidecar_core.pixels.attributes import as_floats, frame_value

Vector3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class SliceRef:
    """One 2-D slice of a series: a frame of an instance, with what ordering needs."""

    dataset_index: int
    frame_number: int  # 1-based frame inside the instance (1 for single-frame)
    sop_instance_uid: str
    instance_number: int | None
    position: Vector3 | None  # ImagePositionPatient, mm (LPS)
    orientation: Orientation | None  # ImageOrientationPatient: row cosines, column cosines
    laterality: str = ""
    view_position: str = ""


def slice_refs(datasets: Sequence[Dataset], frame_counts: Sequence[int]) -> list[SliceRef]:
    """One SliceRef per frame of every dataset (``frame_counts[i]`` frames in dataset ``i``)."""
    refs: list[SliceRef] = []
    for index, (ds, count) in enumerate(zip(datasets, frame_counts, strict=True)):
        uid = str(ds.get("SOPInstanceUID", "") or "")
        number = _instance_number(ds)
        view = str(ds.get("ViewPosition", "") or "").strip()
        for frame in range(count):
            refs.append(
                SliceRef(
                    dataset_index=index,
                    frame_number=frame + 1,
                    sop_instance_uid=uid,
                    instance_number=number,
                    position=image_position(ds, frame),
                    orientation=image_orientation(ds, frame),
                    laterality=_laterality(ds, frame),
                    view_position=view,
                )
            )
    return refs


def image_position(ds: Dataset, frame_index: int = 0) -> Vector3 | None:
    """ImagePositionPatient of a frame (Plane Position macro or top level), None if absent."""
    value = _vector(
        frame_value(ds, frame_index, "PlanePositionSequence", "ImagePositionPatient"), 3
    )
    return cast(Vector3 | None, value)


def image_orientation(ds: Dataset, frame_index: int = 0) -> Orientation | None:
    """ImageOrientationPatient of a frame, None if absent or degenerate."""
    value = _vector(
        frame_value(ds, frame_index, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    if value is None or math.isnan(slice_normal(cast(Orientation, value))[0]):
        return None
    return cast(Orientation, value)


def pixel_spacing(ds: Dataset, frame_index: int = 0) -> tuple[float, float] | None:
    """PixelSpacing (row spacing, column spacing) in mm; MG falls back to ImagerPixelSpacing."""
    value = _vector(frame_value(ds, frame_index, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if value is None and str(ds.get("Modality", "")).upper() == "MG":
        value = _vector(ds.get("ImagerPixelSpacing"), 2)
    if value is None or min(value) <= 0:
        return None
    return (value[0], value[1])


def pixel_aspect(ds: Dataset, frame_index: int = 0) -> float:
    """Physical height / width of one pixel, 1.0 when unknown (PS3.3 C.7.6.3.1.7).

    From Pixel Spacing (row spacing, column spacing; per frame in enhanced images), else Imager
    or Nominal Scanned Pixel Spacing, else Pixel Aspect Ratio (vertical, horizontal sizes).
    """
    candidates = (
        frame_value(ds, frame_index, "PixelMeasuresSequence", "PixelSpacing"),
        ds.get("ImagerPixelSpacing"),
        ds.get("NominalScannedPixelSpacing"),
        ds.get("PixelAspectRatio"),
    )
    for value in candidates:
        pair = _vector(value, 2)
        if pair is not None and min(pair) > 0:
            return pair[0] / pair[1]
    return 1.0


def slice_normal(orientation: Orientation) -> Vector3:
    """Unit normal ``cross(row_cosines, column_cosines)`` of an ImageOrientationPatient."""
    r, c = orientation[:3], orientation[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    length = math.sqrt(sum(v * v for v in n))
    if length == 0:
        return (math.nan, math.nan, math.nan)
    return (n[0] / length, n[1] / length, n[2] / length)


def _vector(value: object, size: int) -> tuple[float, ...] | None:
    values = as_floats(value)
    if values is None or len(values) != size or not all(math.isfinite(v) for v in values):
        return None
    return values


def _instance_number(ds: Dataset) -> int | None:
    try:
        value = ds.get("InstanceNumber")
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _laterality(ds: Dataset, frame_index: int) -> str:
    value = frame_value(ds, frame_index, "FrameAnatomySequence", "FrameLaterality")
    value = value or ds.get("ImageLaterality") or ds.get("Laterality") or ""
    return str(value).strip()
