"""The model-ready input (docs/model-input.md): contents, geometry, strictness, npz round trip."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from sidecar_core.model_input import VIEW_MIN_BYTES, _stored_view, read_arrays
from sidecar_core.pixels import (
    MODEL_INPUT_FORMAT,
    DuplicateSlicePositions,
    InconsistentOrientation,
    ModelInputFormatError,
    MonochromeRequired,
    build_model_input,
    load_model_input,
    save_model_input,
)
from sidecar_core.pixels.volume import compact_volume
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, make_series, reread

# Series are built in the tests with pydicom (test_pixels_support, imported above).


def _oblique_series_with_marker() -> tuple[list, np.ndarray]:
    """A shuffled oblique series with one bright voxel; returns it and the marker's LPS point."""
    angle = np.deg2rad(25.0)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([0.0, 0.0, -1.0])  # coronal-ish, tilted
    normal = np.cross(row, col)
    spacing = (0.8, 0.6)  # (between rows, between columns)
    origin = np.array([-40.0, 15.0, 60.0])
    positions = [origin + 2.0 * k * normal for k in range(12)]
    series = make_series([0] * 12, positions, orientation=[*row, *col], size=16)
    k, r, c = 7, 5, 11  # the marker: slice 7, row 5, column 11
    marked = np.zeros((16, 16), np.int16)
    marked[r, c] = 1000
    series[k].PixelData = marked.tobytes()
    for ds in series:
        ds.PixelSpacing = list(spacing)
    expected = positions[k] + row * spacing[1] * c + col * spacing[0] * r
    order = np.random.default_rng(5).permutation(12)
    return [series[i] for i in order], expected


def test_volume_geometry_follows_the_documented_formula() -> None:
    series, expected_point = _oblique_series_with_marker()
    mi = build_model_input(series)
    z, y, x = np.unravel_index(int(np.argmax(mi.volume)), mi.volume.shape)
    point = (
        mi.positions[z]
        + mi.orientation[0:3] * mi.pixel_spacing[1] * x
        + mi.orientation[3:6] * mi.pixel_spacing[0] * y
    )
    assert np.allclose(point, expected_point, atol=1e-6)
    assert mi.slice_spacing == pytest.approx(2.0)
    assert mi.spacing_zyx.tolist() == pytest.approx([2.0, 0.8, 0.6])


def test_contents_match_the_format() -> None:
    series = make_series([10, 20, 30], [(0.0, 0.0, 2.0 * i) for i in range(3)])
    for ds in series:
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    mi = build_model_input(series)
    assert mi.format == MODEL_INPUT_FORMAT
    assert mi.volume.dtype == np.float32 and mi.volume.shape == (3, 8, 8)
    assert mi.volume[:, 0, 0].tolist() == [-1014.0, -1004.0, -994.0]  # HU
    assert mi.positions.dtype == np.float64 and mi.positions[:, 2].tolist() == [0.0, 2.0, 4.0]
    assert mi.orientation.tolist() == [1, 0, 0, 0, 1, 0]
    assert mi.pixel_spacing.tolist() == [0.7, 0.7]
    assert mi.frames.dtype == np.int32 and mi.frames.tolist() == [1, 1, 1]
    assert mi.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in series)
    assert mi.modality == "CT" and mi.laterality == ("", "", "")


def test_single_slice_without_geometry_has_nan_geometry() -> None:
    mi = build_model_input(make_series([5], None))
    assert np.isnan(mi.positions).all() and np.isnan(mi.orientation).all()
    assert np.isnan(mi.slice_spacing)


def test_mammography_keeps_one_entry_per_view() -> None:
    views = []
    for laterality, view, number in (("R", "MLO", 2), ("L", "CC", 1)):
        ds = make_image(np.zeros((6, 4), np.uint16), modality="MG", spacing=None)
        ds.ImageLaterality, ds.ViewPosition, ds.InstanceNumber = laterality, view, number
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.SeriesInstanceUID = "1.2.3"
        views.append(reread(ds))
    mi = build_model_input(views)
    assert mi.laterality == ("L", "R") and mi.view_position == ("CC", "MLO")
    assert mi.pixel_spacing.tolist() == [0.1, 0.1]
    assert np.isnan(mi.slice_spacing)


def test_inconsistent_geometry_is_refused_for_a_volume() -> None:
    series = make_series(range(3), [(0.0, 0.0, float(z)) for z in range(3)])
    series[1].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(InconsistentOrientation):
        build_model_input(series)
    assert build_model_input(series, strict=False).volume.shape == (3, 8, 8)
    duplicate = make_series(range(2), [(0.0, 0.0, 1.0), (0.0, 0.0, 1.0)])
    with pytest.raises(DuplicateSlicePositions):
        build_model_input(duplicate)


def test_colour_series_has_no_model_input() -> None:
    ds = make_image(np.zeros((2, 2, 3), np.uint8), photometric="RGB", bits_allocated=8)
    with pytest.raises(MonochromeRequired):
        build_model_input([reread(ds)])


def test_save_load_round_trip_is_equal() -> None:
    series, _ = _oblique_series_with_marker()
    mi = build_model_input(series)
    data = save_model_input(mi)
    loaded = load_model_input(data)
    assert loaded == mi
    assert loaded.volume.dtype == np.float32 and loaded.frames.dtype == np.int32


def test_stored_and_deflated_archives_hold_the_same_input() -> None:
    mi = build_model_input(make_series([1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]))
    stored, deflated = save_model_input(mi, compress_level=0), save_model_input(mi)
    assert load_model_input(stored) == load_model_input(deflated) == mi
    assert len(stored) > len(deflated)


def test_saved_archive_is_a_plain_npz_with_the_documented_keys() -> None:
    mi = build_model_input(make_series([1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]))
    with np.load(io.BytesIO(save_model_input(mi)), allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            [
                "format", "volume", "positions", "orientation", "pixel_spacing",
                "slice_spacing", "sop_instance_uids", "frames", "modality", "laterality",
                "view_position",
            ]
        )  # fmt: skip
        assert str(archive["format"]) == "sidecar.model_input.v1"
        # integral values (HU) are stored losslessly as int16 and load back as float32
        assert archive["volume"].dtype == np.int16
        assert archive["slice_spacing"].shape == () and float(archive["slice_spacing"]) == 3.0
        assert archive["sop_instance_uids"].tolist() == list(mi.sop_instance_uids)


@pytest.mark.parametrize("fraction", [0.0, 0.25])  # int16 and float32 storage
def test_read_arrays_views_stored_archives_and_matches_numpy(fraction: float) -> None:
    series, _ = _oblique_series_with_marker()
    mi = build_model_input(series)
    mi.volume[0, 0, 0] += fraction
    for level in (0, 1):
        data = save_model_input(mi, compress_level=level)
        arrays = read_arrays(data)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            assert sorted(arrays) == sorted(archive.files)
            for name in archive.files:
                assert arrays[name].dtype == archive[name].dtype, name
                np.testing.assert_array_equal(arrays[name], archive[name])
        loaded = load_model_input(data)
        assert loaded == mi
        loaded.volume[0, 0, 0] += 1  # the loaded volume is the caller's to change
        assert load_model_input(data) == mi


def test_a_stored_volume_is_a_view_of_the_archive_not_a_copy() -> None:
    series, _ = _oblique_series_with_marker()
    data = save_model_input(build_model_input(series), compress_level=0)
    volume = read_arrays(data)["volume"]
    if volume.nbytes >= VIEW_MIN_BYTES:
        assert not volume.flags.owndata and not volume.flags.writeable
    big = np.arange(2**20, dtype=np.int16).reshape(16, 256, 256)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        with archive.open("volume.npy", "w") as member:
            np.lib.format.write_array(member, big)
        with archive.open("fortran.npy", "w") as member:
            np.lib.format.write_array(member, np.asfortranarray(big[0].astype(np.float64)))
    stored = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(stored)) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    view = _stored_view(stored, infos["volume.npy"])
    assert view is not None and not view.flags.owndata
    np.testing.assert_array_equal(view, big)
    np.testing.assert_array_equal(_stored_view(stored, infos["fortran.npy"]), big[0])


def test_a_damaged_stored_volume_is_a_format_error() -> None:
    series, _ = _oblique_series_with_marker()
    data = bytearray(save_model_input(build_model_input(series), compress_level=0))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("volume.npy")
    data[info.header_offset + 200] ^= 0xFF  # one voxel byte flipped, past the npy header
    with pytest.raises(ModelInputFormatError, match="CRC"):
        load_model_input(bytes(data))


def test_a_truncated_stored_archive_is_a_format_error() -> None:
    series, _ = _oblique_series_with_marker()
    data = save_model_input(build_model_input(series), compress_level=0)
    with pytest.raises(ModelInputFormatError):
        load_model_input(data[: len(data) // 2])


def test_modified_copy_is_not_equal() -> None:
    mi = build_model_input(make_series([1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]))
    other = load_model_input(save_model_input(mi))
    other.volume[0, 0, 0] += 1
    assert other != mi


def test_loading_garbage_raises_a_format_error() -> None:
    with pytest.raises(ModelInputFormatError):
        load_model_input(b"not a zip archive")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, format=np.array("other.v9"), volume=np.zeros((1, 1, 1)))
    with pytest.raises(ModelInputFormatError):
        load_model_input(buffer.getvalue())


def test_fractional_volumes_stay_float32_and_round_trip() -> None:
    mi = build_model_input(make_series([1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]))
    mi.volume[0, 0, 0] = 0.25
    data = save_model_input(mi)
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        assert archive["volume"].dtype == np.float32
    loaded = load_model_input(data)
    assert loaded.volume.dtype == np.float32 and loaded == mi


def test_int16_storage_is_lossless() -> None:
    mi = build_model_input(make_series([1, 2], [(0.0, 0.0, 0.0), (0.0, 0.0, 3.0)]))
    mi.volume[...] = np.linspace(-1024, 3071, mi.volume.size).round().reshape(mi.volume.shape)
    loaded = load_model_input(save_model_input(mi))
    assert loaded.volume.dtype == np.float32
    np.testing.assert_array_equal(loaded.volume, mi.volume)


@pytest.mark.parametrize("odd", [0.5, 40000.0, -40000.0, float("nan"), float("inf")])
@pytest.mark.parametrize("where", [(0, 0, 0), (-1, -1, -1), (2, 3, 1)])
def test_compaction_keeps_float32_for_any_voxel_int16_cannot_hold(
        odd: float, where: tuple[int, int, int]) -> None:
    volume = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) - 30
    assert compact_volume(volume).dtype == np.int16
    np.testing.assert_array_equal(compact_volume(volume), volume)
    volume[where] = odd
    kept = compact_volume(volume)
    assert kept.dtype == np.float32
    np.testing.assert_array_equal(kept, volume)
    assert compact_volume(np.float32(7)).dtype == np.int16
