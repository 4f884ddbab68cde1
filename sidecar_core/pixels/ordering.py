"""Anatomical slice order: position along the slice normal, never arrival order or numbering."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sidecar_core.pixels.geometry import SliceRef, Vector3, slice_normal

ORIENTATION_TOLERANCE = 1e-3  # max difference of a direction cosine (about 0.06 degrees)
DUPLICATE_TOLERANCE_MM = 0.01
IRREGULAR_SPACING_FRACTION = 0.1

BY_SLICE_NORMAL = "slice_normal"
BY_INSTANCE_NUMBER = "instance_number"
BY_SOP_INSTANCE_UID = "sop_instance_uid"


class OrderingIssue(StrEnum):
    """What an operator should know about how a series was ordered."""

    NO_GEOMETRY = "no_geometry"  # no slice has IPP/IOP: ordered by InstanceNumber
    PARTIAL_GEOMETRY = "partial_geometry"  # some slices lack IPP/IOP: fell back
    INCONSISTENT_ORIENTATION = "inconsistent_orientation"  # IOP differs: fell back
    DUPLICATE_POSITIONS = "duplicate_positions"  # two slices at the same place
    IRREGULAR_SPACING = "irregular_spacing"  # gaps differ (missing slice, mixed stacks)


@dataclass(frozen=True)
class SliceOrder:
    """The anatomical order of a series' slices and how it was found."""

    indices: tuple[int, ...]  # positions into the SliceRef list, in anatomical order
    method: str  # "slice_normal", "instance_number" or "sop_instance_uid"
    normal: Vector3 | None  # unit slice normal used for sorting
    distances: tuple[float, ...]  # position along the normal per ordered slice (mm)
    slice_spacing: float  # median gap between consecutive positions; NaN if unknown
    issues: tuple[OrderingIssue, ...]

    @property
    def consistent_orientation(self) -> bool:
        return OrderingIssue.INCONSISTENT_ORIENTATION not in self.issues


def order_slices(refs: Sequence[SliceRef], *, use_geometry: bool = True) -> SliceOrder:
    """Sort slices ascending by ``dot(IPP, cross(row, col))``; ties by InstanceNumber, frame.

    Falls back to InstanceNumber, then SOPInstanceUID, then frame number when geometry is
    absent, partial or inconsistent (``use_geometry=False`` for projection images), and says
    why in ``issues``.
    """
    issues: list[OrderingIssue] = []
    with_geometry = [r for r in refs if r.position is not None and r.orientation is not None]
    if use_geometry and refs:
        if not with_geometry:
            issues.append(OrderingIssue.NO_GEOMETRY)
        elif len(with_geometry) < len(refs):
            issues.append(OrderingIssue.PARTIAL_GEOMETRY)
        elif not _same_orientation(refs):
            issues.append(OrderingIssue.INCONSISTENT_ORIENTATION)
        else:
            return _order_by_normal(refs)
    ordered = sorted(range(len(refs)), key=lambda i: fallback_key(refs[i]))
    method = (
        BY_INSTANCE_NUMBER
        if any(r.instance_number is not None for r in refs)
        else BY_SOP_INSTANCE_UID
    )
    return SliceOrder(tuple(ordered), method, None, (), math.nan, tuple(issues))


def fallback_key(ref: SliceRef) -> tuple[bool, int, tuple[int, ...], str, int, int]:
    """InstanceNumber (missing last), then SOPInstanceUID numerically, then frame number."""
    number = ref.instance_number
    return (
        number is None,
        number if number is not None else 0,
        _uid_key(ref.sop_instance_uid),
        ref.sop_instance_uid,
        ref.frame_number,
        ref.dataset_index,
    )


def _uid_key(uid: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in uid.split("."))


def _same_orientation(refs: Sequence[SliceRef]) -> bool:
    orientations = np.array([r.orientation for r in refs], dtype=np.float64)
    return bool(np.all(np.abs(orientations - orientations[0]) <= ORIENTATION_TOLERANCE))


def _order_by_normal(refs: Sequence[SliceRef]) -> SliceOrder:
    first = refs[0].orientation
    assert first is not None
    normal = slice_normal(first)
    positions = np.array([r.position for r in refs], dtype=np.float64)
    distances = positions @ np.array(normal)
    numbers = np.array(
        [r.instance_number if r.instance_number is not None else 0 for r in refs], dtype=np.int64
    )
    frames = np.array([r.frame_number for r in refs], dtype=np.int64)
    order = np.lexsort((frames, numbers, distances))  # last key is the primary one
    sorted_distances = distances[order]
    gaps = np.diff(sorted_distances)
    issues: list[OrderingIssue] = []
    spacing = math.nan
    if gaps.size:
        if np.any(gaps < DUPLICATE_TOLERANCE_MM):
            issues.append(OrderingIssue.DUPLICATE_POSITIONS)
        spacing = float(np.median(gaps))
        tolerance = max(IRREGULAR_SPACING_FRACTION * spacing, DUPLICATE_TOLERANCE_MM)
        if np.any(np.abs(gaps - spacing) > tolerance):
            issues.append(OrderingIssue.IRREGULAR_SPACING)
    return SliceOrder(
        indices=tuple(int(i) for i in order),
        method=BY_SLICE_NORMAL,
        normal=normal,
        distances=tuple(float(d) for d in sorted_distances),
        slice_spacing=spacing,
        issues=tuple(issues),
    )
