"""Pixel/voxel ↔ patient (LPS, mm) geometry from positions, orientation and pixel spacing.

Patient coordinates of voxel (column x, row y, slice z) follow DICOM PS3.3 C.7.6.2.1.1 and
docs/model-input.md: ``positions[z] + row_cosines * column_spacing * x + col_cosines *
row_spacing * y``. A fractional z interpolates between the two neighbouring slice positions
(linear extrapolation past the ends) — never slice index × SliceThickness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class GeometryError(ValueError):
    """The input has no usable patient geometry (NaN or degenerate orientation/positions)."""


class HasGeometry(Protocol):
    positions: np.ndarray  # [Z, 3]
    orientation: np.ndarray  # [6]
    pixel_spacing: np.ndarray  # [2] (row spacing, column spacing)


def has_geometry(source: HasGeometry) -> bool:
    """True when positions, orientation and pixel spacing are all present and finite."""
    try:
        _checked(source)
    except GeometryError:
        return False
    return True


def _checked(source: HasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    positions = np.asarray(source.positions, dtype=np.float64).reshape(-1, 3)
    orientation = np.asarray(source.orientation, dtype=np.float64).reshape(6)
    spacing = np.asarray(source.pixel_spacing, dtype=np.float64).reshape(2)
    if positions.size == 0 or not np.isfinite(positions).all():
        raise GeometryError("ImagePositionPatient missing for some slices")
    if not np.isfinite(orientation).all() or not np.isfinite(spacing).all():
        raise GeometryError("ImageOrientationPatient or PixelSpacing missing")
    row_dir, col_dir = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise GeometryError("ImageOrientationPatient is not two orthonormal direction cosines")
    if (spacing <= 0).any():
        raise GeometryError("PixelSpacing must be positive")
    return positions, row_dir, col_dir, spacing


def slice_position(positions: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Position of (fractional) slice index z, interpolated between neighbouring slices."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    z = np.asarray(z, dtype=np.float64)
    if len(positions) == 1:
        return np.broadcast_to(positions[0], (*z.shape, 3)).copy()
    lower = np.clip(np.floor(z), 0, len(positions) - 2).astype(int)
    frac = (z - lower)[..., None]
    return positions[lower] * (1 - frac) + positions[lower + 1] * frac


def voxel_to_patient(
    source: HasGeometry, x: float | np.ndarray, y: float | np.ndarray, z: float | np.ndarray = 0.0
) -> np.ndarray:
    """Patient mm [..., 3] of column x, row y, slice z (scalars or broadcastable arrays)."""
    positions, row_dir, col_dir, spacing = _checked(source)
    x, y, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, z)))
    return (
        slice_position(positions, z)
        + row_dir * spacing[1] * x[..., None]
        + col_dir * spacing[0] * y[..., None]
    )


def patient_to_voxel(source: HasGeometry, point: Sequence[float] | np.ndarray) -> np.ndarray:
    """[x, y, z] (column, row, fractional slice index) of a patient point; inverse of the above."""
    positions, row_dir, col_dir, spacing = _checked(source)
    normal = np.cross(row_dir, col_dir)
    point = np.asarray(point, dtype=np.float64)
    along = positions @ normal
    if len(positions) == 1:
        z = 0.0
    else:
        order = np.argsort(along)
        z = float(
            np.interp(point @ normal, along[order], order.astype(float), left=np.nan, right=np.nan)
        )
        if np.isnan(z):  # outside the stack: extrapolate from the end spacing
            step = (along[-1] - along[0]) / (len(along) - 1)
            z = float((point @ normal - along[0]) / step)
    rel = point - slice_position(positions, z)
    return np.array([rel @ row_dir / spacing[1], rel @ col_dir / spacing[0], z])


def voxel_volume_ml(source: HasGeometry, slice_spacing: float) -> float:
    """Volume of one voxel in millilitres (row spacing × column spacing × slice spacing)."""
    spacing = np.asarray(source.pixel_spacing, dtype=np.float64).reshape(2)
    if not np.isfinite(spacing).all() or not np.isfinite(slice_spacing):
        raise GeometryError("pixel or slice spacing missing; no physical volume")
    return float(spacing[0] * spacing[1] * abs(slice_spacing) / 1000.0)


def box_center_px(bbox: Sequence[float]) -> tuple[float, float]:
    """Centre (x, y) of a pixel box [x_min, y_min, x_max, y_max] (inclusive pixel indices)."""
    x_min, y_min, x_max, y_max = (float(v) for v in bbox)
    return (x_min + x_max) / 2, (y_min + y_max) / 2


def box3d_center_voxel(box_zyx: Sequence[float]) -> tuple[float, float, float]:
    """Centre (x, y, z) of a voxel box (z0, y0, x0, z1, y1, x1), inclusive indices."""
    z0, y0, x0, z1, y1, x1 = (float(v) for v in box_zyx)
    return (x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2


def box_center_mm(source: HasGeometry, bbox: Sequence[float], z: float = 0.0) -> np.ndarray:
    """Patient mm of the centre of pixel box [x_min, y_min, x_max, y_max] on slice z."""
    x, y = box_center_px(bbox)
    return voxel_to_patient(source, x, y, z)
