"""Table VOI LUTs (VOI LUT Sequence, PS3.3 C.11.2.1.1) against hand-made tables and pydicom."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi

from sidecar_core.display.render import presets_for, thumbnail_png, viewport_pngs
from sidecar_core.pixels import (
    InvalidVoiLut,
    VoiLut,
    apply_voi_lut,
    apply_window,
    decode_image,
    decode_series,
)
from sidecar_core.pixels.display import window_for
from sidecar_core.pixels.voi_lut import read_voi_lut
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, reread

# Every dataset here is built in the test with pydicom (test_pixels_support, imported above).
# no file from disk is used. Expected display values are worked out by hand from the tables.


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _voi_item(
    descriptor: list[int], data: list[int] | bytes, *, descriptor_vr: str | None = None
) -> Dataset:
    """A VOI LUT Sequence item; ``descriptor_vr`` forces US or SS instead of pydicom's choice."""
    item = Dataset()
    if descriptor_vr is None:
        item.LUTDescriptor = descriptor
    else:
        item.add_new(0x00283002, descriptor_vr, descriptor)
    if isinstance(data, bytes):
        item.add_new(0x00283006, "OW", data)
    else:
        item.add_new(0x00283006, "US", data)
    item.LUTExplanation = "STEP"
    return item


def _ramp_12_bit() -> np.ndarray:
    """64 x 64 unsigned 12-bit ramp: pixel (r, c) stores r * 64 + c (0..4095)."""
    return np.arange(4096, dtype=np.uint16).reshape(64, 64)


def _step_image(levels: list[int], edges: list[int]) -> Dataset:
    """The 12-bit ramp with a 4096-entry, 16-bit step table: level i from edges[i - 1] on."""
    table = np.zeros(4096, np.uint16)
    for level, edge in zip(levels[1:], edges, strict=True):
        table[edge:] = level
    table[: edges[0]] = levels[0]
    ds = make_image(_ramp_12_bit(), bits_stored=12, modality="MR")
    ds.VOILUTSequence = [_voi_item([4096, 0, 16], table.tobytes())]
    return reread(ds)


def test_step_table_replaces_the_auto_window() -> None:
    ds = _step_image([0, 32768, 65535], [1000, 3000])
    image = decode_image(ds)
    assert image.voi_lut is not None and image.voi_lut.name == "STEP"
    assert image.has_dicom_window and not image.dicom_windows
    assert presets_for(image.modality, image.has_dicom_window) == ["dicom"]
    shown = _pixels(viewport_pngs(image, "dicom")[0]).ravel()
    # 32768 * 255 / 65535 = 127.502 -> 128; the table is flat between its edges
    assert shown[:1000].tolist() == [0] * 1000
    assert shown[1000:3000].tolist() == [128] * 2000
    assert shown[3000:].tolist() == [255] * 1096
    auto = _pixels(viewport_pngs(image, "auto")[0]).ravel()
    assert int(auto[1500]) < 100 and int(auto[3500]) < 230  # a ramp, not the steps
    assert thumbnail_png(image, size=64) == thumbnail_png(image, size=64, preset="dicom")


def test_table_matches_pydicom_for_16_bit_entries_and_signed_offset() -> None:
    stored = np.arange(-2048, 2048, dtype=np.int16).reshape(64, 64)
    table = np.random.default_rng(11).integers(0, 65536, 3000).astype(np.uint16)
    ds = make_image(stored, signed=True, modality="MR")
    ds.VOILUTSequence = [_voi_item([3000, -1024, 16], table.tobytes())]
    ds = reread(ds)
    assert ds.VOILUTSequence[0]["LUTDescriptor"].VR == "SS"  # written per PixelRepresentation
    image = decode_image(ds)
    assert image.voi_lut is not None and image.voi_lut.first_mapped == -1024
    expected = np.floor(apply_voi(stored, ds).astype(np.float64) * 255 / 65535 + 0.5)
    assert np.array_equal(apply_voi_lut(image.frames[0], image.voi_lut), expected)
    # by hand: below -1024 the first entry, from -1024 + 2999 on the last
    got = apply_voi_lut(np.array([-2048.0, -1024.0, -1023.0, 1975.0, 2047.0]), image.voi_lut)
    scaled = [round(int(table[i]) * 255 / 65535) for i in (0, 0, 1, 2999, 2999)]
    assert got.tolist() == scaled


@pytest.mark.parametrize("vr", ["SS", "US"])
def test_signed_first_value_in_either_vr_with_8_bit_entries(vr: str) -> None:
    """First mapped -500 stored as SS, or as US 65036 (its two's complement), both read -500."""
    stored = np.array([[-2000, -501, -500, -499, 0, 499, 500, 2000]], dtype=np.int16)
    entries = [i // 4 for i in range(1001)]  # 0..250, 8-bit
    first = -500 if vr == "SS" else 65036
    ds = make_image(stored, signed=True, modality="MR")
    ds.VOILUTSequence = [_voi_item([1001, first, 8], entries, descriptor_vr=vr)]
    ds = reread(ds)
    written = ds.VOILUTSequence[0]["LUTDescriptor"]
    assert str(written.VR) == vr
    image = decode_image(ds)
    assert image.voi_lut is not None and image.voi_lut.first_mapped == -500
    shown = _pixels(viewport_pngs(image, "dicom")[0])
    # entries: -500 -> 0, -499 -> 0 (1 // 4), 0 -> 125, 499 -> 249, 500 and beyond -> 250
    assert shown.tolist() == [[0, 0, 0, 0, 125, 249, 250, 250]]


def test_first_value_is_signed_when_the_rescale_output_can_be_negative() -> None:
    """CT: unsigned stored values, intercept -1024, so the first value mapped reads as SS
    (PS3.3 C.11.2.1.1) even though PixelRepresentation 0 makes the file store it as US."""
    stored = np.array([[0, 524, 1023, 1024, 1124, 4095]], dtype=np.uint16)  # HU -1024..3071
    table = np.zeros(2048, np.uint16)
    table[1024:] = 65535  # black below 0 HU, white from 0 HU
    ds = make_image(stored, bits_stored=12, slope=1.0, intercept=-1024.0)
    ds.VOILUTSequence = [_voi_item([2048, 64512, 16], table.tobytes())]  # 64512 = -1024 as SS
    image = decode_image(reread(ds))
    assert image.voi_lut is not None and image.voi_lut.first_mapped == -1024
    assert presets_for("CT", image.has_dicom_window)[-1] == "dicom"
    shown = _pixels(viewport_pngs(image, "dicom")[0])
    assert shown.tolist() == [[0, 0, 0, 255, 255, 255]]


def test_65536_entry_table_is_written_as_zero_entries() -> None:
    stored = np.array([[0, 1, 255, 256, 32768, 65534, 65535]], dtype=np.uint16)
    entries = np.arange(65536, dtype=np.uint32)
    table = ((entries * entries) >> 16).astype(np.uint16)  # a square law: non-linear
    ds = make_image(stored, modality="MR")
    ds.VOILUTSequence = [_voi_item([0, 0, 16], table.tobytes())]
    image = decode_image(reread(ds))
    assert image.voi_lut is not None and image.voi_lut.n_entries == 65536
    shown = _pixels(viewport_pngs(image, "dicom")[0])
    expected = [int(np.floor(int(table[v]) * 255 / 65535 + 0.5)) for v in stored[0]]
    assert shown[0].tolist() == expected == [0, 0, 0, 0, 64, 255, 255]


def test_8_bit_entries_packed_or_one_per_word_read_the_same() -> None:
    entries = np.array([0, 10, 200, 255], np.uint8)
    packed = _voi_item([4, 0, 8], entries.tobytes())
    words = _voi_item([4, 0, 8], entries.astype("<u2").tobytes())
    values = np.arange(-1, 6, dtype=np.float32)
    for item in (packed, words):
        lut = read_voi_lut(item, signed_input=False)
        assert lut.entries.tolist() == [0, 10, 200, 255]
        assert apply_voi_lut(values, lut).tolist() == [0, 0, 10, 200, 255, 255, 255]


def test_big_endian_words() -> None:
    item = _voi_item([2, 0, 16], np.array([1, 65535], ">u2").tobytes())
    lut = read_voi_lut(item, signed_input=False, little_endian=False)
    assert lut.entries.tolist() == [1, 65535]


def test_rounding_nan_and_inversion() -> None:
    lut = VoiLut(first_mapped=10, bits=8, entries=np.array([0, 100, 255], np.uint16))
    values = np.array([9.0, 10.4, 10.6, 11.49, 11.5, np.nan, np.inf, -np.inf], np.float32)
    assert apply_voi_lut(values, lut).tolist() == [0, 0, 100, 100, 255, 0, 255, 0]
    assert apply_voi_lut(values, lut, invert=True).tolist() == [255, 255, 155, 155, 0, 255, 0, 255]


def test_entries_above_the_bit_depth_are_clipped_and_depth_scales() -> None:
    lut = VoiLut(first_mapped=0, bits=12, entries=np.array([0, 2048, 4095, 9000], np.uint16))
    # 12-bit entries: 2048 * 255 / 4095 = 127.53 -> 128; 9000 is clipped to 4095
    assert lut.levels.tolist() == [0, 128, 255, 255]


def test_window_wins_over_a_table_when_both_are_present() -> None:
    ds = make_image(_ramp_12_bit(), bits_stored=12, modality="MR", window=([2048], [4096]))
    ds.VOILUTSequence = [_voi_item([4096, 0, 16], np.zeros(4096, np.uint16).tobytes())]
    image = decode_image(reread(ds))
    assert image.voi_lut is None and len(image.dicom_windows) == 1
    shown = _pixels(viewport_pngs(image, "dicom")[0])
    expected = apply_window(image.frames[0], image.dicom_windows[0])
    assert np.array_equal(shown, expected) and shown.max() == 255


def test_invalid_windows_leave_the_table_in_charge() -> None:
    ds = _step_image([0, 65535], [2048])
    ds.WindowCenter, ds.WindowWidth = 100, 0.5  # width < 1 is invalid for LINEAR: dropped
    image = decode_image(reread(ds))
    assert image.voi_lut is not None and not image.dicom_windows
    shown = _pixels(viewport_pngs(image, "dicom")[0]).ravel()
    assert shown[2047] == 0 and shown[2048] == 255


@pytest.mark.parametrize(
    ("descriptor", "data"),
    [
        ([16, 0, 16], b"\x00\x00" * 8),  # 8 of 16 entries
        ([4, 0, 17], b"\x00\x00" * 4),  # 17 bits per entry
        ([4, 0], b"\x00\x00" * 4),  # two values
    ],
)
def test_unusable_table_is_dropped_for_the_auto_window(descriptor: list[int], data: bytes) -> None:
    item = _voi_item(descriptor, data)
    with pytest.raises(InvalidVoiLut):
        read_voi_lut(item, signed_input=False)
    ds = make_image(_ramp_12_bit(), bits_stored=12, modality="MR")
    ds.VOILUTSequence = [item]
    image = decode_image(ds)
    assert image.voi_lut is None and not image.has_dicom_window
    assert presets_for(image.modality, image.has_dicom_window) == ["auto"]


def _enhanced(frame_voi: Dataset) -> Dataset:
    """Two frames (ramps) with a Frame VOI LUT Sequence in the shared functional groups."""
    stored = np.stack([_ramp_12_bit(), _ramp_12_bit()])
    ds = make_image(stored, bits_stored=12, modality="MR")
    shared = Dataset()
    shared.FrameVOILUTSequence = [frame_voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    return reread(ds)


def test_frame_voi_window_still_wins_in_enhanced_images() -> None:
    frame_voi = Dataset()
    frame_voi.WindowCenter, frame_voi.WindowWidth = 1000, 200
    ds = _enhanced(frame_voi)
    ds.VOILUTSequence = [_voi_item([4096, 0, 16], np.zeros(4096, np.uint16).tobytes())]
    image = decode_image(ds)
    assert [(w.center, w.width) for w in image.dicom_windows] == [(1000.0, 200.0)]
    assert image.voi_lut is None
    shown = _pixels(viewport_pngs(image, "dicom")[1]).ravel()
    assert shown[899] == 0 and shown[1000] == 128 and shown[1100] == 255


def test_frame_voi_table_is_used_in_enhanced_images() -> None:
    table = np.zeros(4096, np.uint16)
    table[3000:] = 65535
    frame_voi = Dataset()
    frame_voi.VOILUTSequence = [_voi_item([4096, 0, 16], table.tobytes())]
    image = decode_image(_enhanced(frame_voi))
    assert image.voi_lut is not None
    for png in viewport_pngs(image, "dicom"):
        shown = _pixels(png).ravel()
        assert shown[2999] == 0 and shown[3000] == 255


def test_series_keeps_the_key_slice_table_and_monochrome1_inverts_it() -> None:
    ds = _step_image([0, 65535], [2048])
    ds.PhotometricInterpretation = "MONOCHROME1"
    series = decode_series([reread(ds)])
    lut = window_for(series.image)
    assert isinstance(lut, VoiLut)
    thumb = _pixels(thumbnail_png(series.image, size=64))
    assert thumb[:31].min() == 255 and thumb[33:].max() == 0  # low rows bright: inverted
