"""Pixel ↔ patient geometry: axial, oblique, uneven spacing, and missing geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from normalizer_svc.geometry import (
    GeometryError,
    box3d_center_voxel,
    box_center_mm,
    box_center_px,
    has_geometry,
    patient_to_voxel,
    slice_position,
    voxel_to_patient,
    voxel_volume_ml,
)


@dataclass
class Geo:
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    theta = np.radians(degrees)
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def stack(
    row: np.ndarray,
    col: np.ndarray,
    origin: np.ndarray,
    steps: list[float],
    spacing: tuple[float, float],
) -> Geo:
    normal = np.cross(row, col)
    positions = np.array([origin + normal * s for s in steps])
    return Geo(positions, np.concatenate([row, col]), np.array(spacing))


def test_axial_matches_the_dicom_formula() -> None:
    geo = stack(
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        np.array([-100.0, -80.0, 30.0]),
        [0, 2.5, 5.0],
        (0.8, 0.6),
    )  # rows 0.8 mm apart, columns 0.6 mm apart
    assert np.allclose(voxel_to_patient(geo, 10, 20, 2), [-100 + 6.0, -80 + 16.0, 35.0])
    assert np.allclose(voxel_to_patient(geo, 0, 0, 1.5), [-100, -80, 33.75])


def test_oblique_orientation_round_trips() -> None:
    turn = rotation(np.array([1.0, 2.0, 0.5]), 23.0)
    row, col = turn @ np.array([1.0, 0, 0]), turn @ np.array([0, 1.0, 0])
    geo = stack(row, col, np.array([12.0, -40.0, 7.0]), [0, 1.25, 2.5, 3.75], (0.7, 0.9))
    x, y, z = 33.0, 17.5, 2.4
    point = voxel_to_patient(geo, x, y, z)
    expected = geo.positions[2] * 0.6 + geo.positions[3] * 0.4 + row * 0.9 * x + col * 0.7 * y
    assert np.allclose(point, expected)
    assert np.allclose(patient_to_voxel(geo, point), [x, y, z])
    # in-plane distances are the pixel spacings, in any orientation
    step_x = voxel_to_patient(geo, 1, 0, 0) - voxel_to_patient(geo, 0, 0, 0)
    step_y = voxel_to_patient(geo, 0, 1, 0) - voxel_to_patient(geo, 0, 0, 0)
    assert np.linalg.norm(step_x) == pytest.approx(0.9)
    assert np.linalg.norm(step_y) == pytest.approx(0.7)


def test_uses_positions_not_index_times_thickness() -> None:
    # uneven gaps (a missing slice): slice 2 is 10 mm past slice 1, not 5 mm
    geo = stack(
        np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3), [0, 5, 15, 20], (1.0, 1.0)
    )
    assert voxel_to_patient(geo, 0, 0, 2)[2] == pytest.approx(15.0)
    assert voxel_to_patient(geo, 0, 0, 1.5)[2] == pytest.approx(10.0)
    assert patient_to_voxel(geo, [0, 0, 10.0])[2] == pytest.approx(1.5)


def test_descending_positions_and_extrapolation() -> None:
    geo = stack(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3), [0, -3, -6], (1.0, 1.0))
    assert patient_to_voxel(geo, [0, 0, -4.5])[2] == pytest.approx(1.5)
    assert slice_position(geo.positions, 3.0)[2] == pytest.approx(-9.0)
    assert patient_to_voxel(geo, [0, 0, -9.0])[2] == pytest.approx(3.0)


def test_vectorised_points() -> None:
    geo = stack(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3), [0, 1, 2], (2.0, 3.0))
    points = voxel_to_patient(geo, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert points.shape == (3, 3)
    assert np.allclose(points[2], [6.0, 4.0, 2.0])


def test_single_projection_image() -> None:
    geo = Geo(np.array([[5.0, 6.0, 7.0]]), np.array([1.0, 0, 0, 0, 1.0, 0]), np.array([0.1, 0.2]))
    assert np.allclose(voxel_to_patient(geo, 10, 10), [7.0, 7.0, 7.0])
    assert np.allclose(box_center_mm(geo, [0, 0, 20, 10]), [7.0, 6.5, 7.0])


@pytest.mark.parametrize("broken", ["positions", "orientation", "pixel_spacing", "degenerate"])
def test_missing_geometry_is_an_error(broken: str) -> None:
    geo = stack(np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3), [0, 1], (1.0, 1.0))
    if broken == "degenerate":
        geo.orientation = np.array([1.0, 0, 0, 1.0, 0, 0])
    else:
        setattr(geo, broken, np.full_like(getattr(geo, broken), np.nan))
    assert not has_geometry(geo)
    with pytest.raises(GeometryError):
        voxel_to_patient(geo, 1, 1, 0)


def test_box_helpers_and_voxel_volume() -> None:
    assert box_center_px([10, 20, 30, 60]) == (20.0, 40.0)
    assert box3d_center_voxel([1, 10, 20, 3, 30, 40]) == (30.0, 20.0, 2.0)
    geo = Geo(np.zeros((1, 3)), np.array([1.0, 0, 0, 0, 1.0, 0]), np.array([0.5, 0.8]))
    assert voxel_volume_ml(geo, 2.5) == pytest.approx(0.001)
    with pytest.raises(GeometryError):
        voxel_volume_ml(geo, float("nan"))
