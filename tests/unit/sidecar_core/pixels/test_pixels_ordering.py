"""Slice ordering: shuffled, renumbered, oblique series come out in anatomical order."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from sidecar_core.pixels import (
    IncompatibleSlices,
    OrderingIssue,
    decode_series,
    order_slices,
)
from sidecar_core.pixels.geometry import SliceRef
from sidecar_core.pixels.ordering import BY_INSTANCE_NUMBER, BY_SLICE_NORMAL, BY_SOP_INSTANCE_UID
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, make_series, reread

# Series are built in the tests with pydicom (test_pixels_support, imported above); slice i
# stores the value i in every pixel so the decoded stack shows the order it came out in.
RNG = np.random.default_rng(1234)


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _shuffled(series: list[Dataset]) -> list[Dataset]:
    order = RNG.permutation(len(series))
    numbers = RNG.permutation(1000)[: len(series)]  # renumbered: InstanceNumber is noise
    out = []
    for new_number, index in zip(numbers, order, strict=True):
        ds = series[index]
        ds.InstanceNumber = int(new_number)
        out.append(ds)
    return out


def _slice_values(series_frames: np.ndarray) -> list[int]:
    return [int(v) for v in series_frames[:, 0, 0]]


def test_shuffled_renumbered_axial_series_is_ordered_by_position() -> None:
    n = 30
    # Slice i sits at z = 100 - 2.5 i: a head-first series acquired from the top down.
    series = make_series(range(n), [(-120.0, -130.0, 100.0 - 2.5 * i) for i in range(n)])
    decoded = decode_series(_shuffled(series))
    # Ascending along the normal (0, 0, 1) means ascending z: the last acquired slice first.
    assert _slice_values(decoded.image.frames) == list(range(n - 1, -1, -1))
    assert decoded.order.method == BY_SLICE_NORMAL
    assert decoded.order.slice_spacing == pytest.approx(2.5)
    assert decoded.order.issues == ()
    assert [s.position[2] for s in decoded.slices if s.position] == sorted(
        100.0 - 2.5 * i for i in range(n)
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_oblique_series_is_ordered_along_its_normal(seed: int) -> None:
    rotation = _rotation(seed)
    row, col = rotation[:, 0], rotation[:, 1]
    normal = np.cross(row, col)
    origin = np.array([-80.0, 40.0, 12.0])
    in_plane_jitter = RNG.normal(size=(25, 2)) * 3.0  # IPP may slide within the plane
    positions = [
        origin + 1.7 * i * normal + jitter[0] * row + jitter[1] * col
        for i, jitter in enumerate(in_plane_jitter)
    ]
    series = make_series(range(25), positions, orientation=[*row, *col])
    decoded = decode_series(_shuffled(series))
    assert _slice_values(decoded.image.frames) == list(range(25))
    assert decoded.order.slice_spacing == pytest.approx(1.7, abs=1e-6)
    assert np.allclose(decoded.order.normal, normal)


def test_without_geometry_instance_number_decides() -> None:
    series = make_series([30, 10, 20], None, instance_numbers=[3, 1, 2])
    decoded = decode_series(series)
    assert _slice_values(decoded.image.frames) == [10, 20, 30]
    assert decoded.order.method == BY_INSTANCE_NUMBER
    assert decoded.order.issues == (OrderingIssue.NO_GEOMETRY,)


def test_without_geometry_or_numbers_uid_order_is_numeric() -> None:
    refs = [
        SliceRef(0, 1, "1.2.10", None, None, None),
        SliceRef(1, 1, "1.2.9", None, None, None),
        SliceRef(2, 1, "1.2.9.1", None, None, None),
    ]
    order = order_slices(refs)
    assert order.indices == (1, 2, 0)
    assert order.method == BY_SOP_INSTANCE_UID


def test_inconsistent_orientation_is_reported_and_falls_back() -> None:
    positions = [(0.0, 0.0, float(z)) for z in range(4)]
    series = make_series([0, 1, 2, 3], positions, instance_numbers=[4, 3, 2, 1])
    series[2].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal localiser mixed in
    decoded = decode_series(series)
    assert not decoded.order.consistent_orientation
    assert OrderingIssue.INCONSISTENT_ORIENTATION in decoded.order.issues
    assert decoded.order.method == BY_INSTANCE_NUMBER
    assert _slice_values(decoded.image.frames) == [3, 2, 1, 0]


def test_partial_geometry_and_duplicates_are_reported() -> None:
    partial = make_series([0, 1], [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
    del partial[1].ImagePositionPatient
    assert decode_series(partial).order.issues == (OrderingIssue.PARTIAL_GEOMETRY,)
    duplicate = make_series([0, 1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
    assert OrderingIssue.DUPLICATE_POSITIONS in decode_series(duplicate).order.issues


def test_missing_slice_is_reported_as_irregular_spacing() -> None:
    z = [0.0, 1.0, 2.0, 4.0, 5.0]
    decoded = decode_series(make_series(range(5), [(0.0, 0.0, v) for v in z]))
    assert decoded.order.issues == (OrderingIssue.IRREGULAR_SPACING,)
    assert decoded.order.slice_spacing == 1.0


def test_enhanced_multi_frame_frames_are_ordered_by_their_plane_positions() -> None:
    z_of_frame = [6.0, 2.0, 4.0]
    frames = np.stack([np.full((4, 4), i, np.int16) for i in range(3)])
    ds = make_image(frames, signed=True)
    ds.SharedFunctionalGroupsSequence = [Dataset()]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence = [orientation]
    ds.PerFrameFunctionalGroupsSequence = []
    for z in z_of_frame:
        plane = Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, z]
        group = Dataset()
        group.PlanePositionSequence = [plane]
        ds.PerFrameFunctionalGroupsSequence.append(group)
    decoded = decode_series([reread(ds)])
    assert _slice_values(decoded.image.frames) == [1, 2, 0]
    assert [s.frame_number for s in decoded.slices] == [2, 3, 1]
    assert decoded.order.slice_spacing == 2.0


def test_slices_of_different_size_cannot_be_stacked() -> None:
    a = make_series([0], [(0.0, 0.0, 0.0)], size=8)
    b = make_series([0], [(0.0, 0.0, 1.0)], size=6)
    b[0].SeriesInstanceUID = a[0].SeriesInstanceUID
    with pytest.raises(IncompatibleSlices):
        decode_series(a + b)
