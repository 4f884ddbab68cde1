"""Decoding synthetic tricky DICOM: sign, BitsStored, rescale, colour models, frames, failures."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless

from sidecar_core.pixels import (
    MissingPixelData,
    TruncatedPixelData,
    UnsupportedTransferSyntax,
    decode_image,
)
from sidecar_core.pixels.errors import InvalidPixelDescription
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, reread

# Every dataset here is built in the test with pydicom (test_pixels_support, imported above).
# no file from disk is used.
RNG = np.random.default_rng(20240607)


def test_unsigned_16_bit_values_are_kept_exactly() -> None:
    stored = RNG.integers(0, 65535, (16, 12), dtype=np.uint16)
    image = decode_image(reread(make_image(stored)))
    assert image.frames.dtype == np.float32
    assert image.frames.shape == (1, 16, 12)
    assert np.array_equal(image.frames[0], stored.astype(np.float32))
    assert not image.rescale_applied and not image.is_color


def test_signed_16_bit_values_are_kept_exactly() -> None:
    stored = RNG.integers(-32768, 32767, (9, 7), dtype=np.int16)
    image = decode_image(reread(make_image(stored, signed=True)))
    assert np.array_equal(image.frames[0], stored.astype(np.float32))


def test_bits_stored_12_signed_is_sign_extended_then_rescaled() -> None:
    values = np.array([[-2048, -1, 0, 1], [2047, -1000, 1000, 5]], dtype=np.int32)
    stored = (values & 0x0FFF).astype(np.uint16)  # two's complement in 12 bits, high bits 0
    ds = make_image(stored, bits_stored=12, signed=True, slope=2.0, intercept=-1024.0)
    image = decode_image(reread(ds))
    assert np.array_equal(image.frames[0], values * 2.0 - 1024.0)
    assert image.rescale_applied
    assert image.modality_transform.slopes == (2.0,)
    assert image.modality_transform.intercepts == (-1024.0,)


def test_bits_stored_12_unsigned_ignores_bits_above_high_bit() -> None:
    values = np.array([[0, 1, 4095, 2048]], dtype=np.uint16)
    stored = values | np.uint16(0xA000)  # junk (e.g. a retired overlay) above bit 11
    image = decode_image(reread(make_image(stored, bits_stored=12)))
    assert np.array_equal(image.frames[0], values.astype(np.float32))


def test_ct_rescale_gives_hounsfield_units() -> None:
    stored = np.array([[0, 1024, 1064, 3071]], dtype=np.uint16)
    image = decode_image(reread(make_image(stored, slope=1.0, intercept=-1024.0)))
    assert image.frames[0].tolist() == [[-1024.0, 0.0, 40.0, 2047.0]]


def test_fractional_slope_is_applied_in_float() -> None:
    stored = np.array([[0, 10, 1000]], dtype=np.uint16)
    image = decode_image(reread(make_image(stored, slope=0.25, intercept=1.5, modality="PT")))
    assert np.allclose(image.frames[0], [[1.5, 4.0, 251.5]])


def test_multi_valued_window_is_read_in_order() -> None:
    ds = make_image(np.zeros((4, 4), np.uint16), window=([40, 400], [400, 1800]))
    ds.WindowCenterWidthExplanation = ["SOFT", "BONE"]
    image = decode_image(reread(ds))
    assert [(w.center, w.width, w.name) for w in image.dicom_windows] == [
        (40.0, 400.0, "SOFT"),
        (400.0, 1800.0, "BONE"),
    ]


def test_window_with_invalid_width_is_dropped() -> None:
    ds = make_image(np.zeros((4, 4), np.uint16), window=([40, 50], [0.5, 100]))
    image = decode_image(reread(ds))
    assert [(w.center, w.width) for w in image.dicom_windows] == [(50.0, 100.0)]


def test_monochrome1_is_flagged_for_inversion() -> None:
    image = decode_image(reread(make_image(np.zeros((2, 2), np.uint16), photometric="MONOCHROME1")))
    assert image.is_monochrome1 and image.photometric_interpretation == "MONOCHROME1"


@pytest.mark.parametrize("planar_configuration", [0, 1])
def test_rgb_any_planar_configuration(planar_configuration: int) -> None:
    rgb = RNG.integers(0, 255, (5, 6, 3), dtype=np.uint8)
    ds = make_image(
        rgb, photometric="RGB", bits_allocated=8, planar_configuration=planar_configuration
    )
    image = decode_image(reread(ds))
    assert image.is_color and image.frames.dtype == np.uint8
    assert np.array_equal(image.frames[0], rgb)


def _rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """PS3.3 C.7.6.3.1.2 YBR_FULL from RGB, computed here independently of pydicom."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    return np.clip(np.round(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def test_ybr_full_is_converted_to_rgb() -> None:
    rgb = RNG.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    ds = make_image(_rgb_to_ybr_full(rgb), photometric="YBR_FULL", bits_allocated=8)
    image = decode_image(reread(ds))
    assert image.photometric_interpretation == "YBR_FULL"
    assert np.abs(image.frames[0].astype(int) - rgb).max() <= 2


def test_ybr_full_422_is_upsampled_and_converted_to_rgb() -> None:
    # Pairs of horizontal pixels share chroma, so 4:2:2 loses nothing but rounding.
    pair_rgb = RNG.integers(0, 255, (4, 3, 3), dtype=np.uint8)
    rgb = np.repeat(pair_rgb, 2, axis=1)  # (4, 6, 3)
    ybr = _rgb_to_ybr_full(rgb)
    packed = bytearray()
    for row in ybr:
        for x in range(0, row.shape[0], 2):
            packed += bytes([row[x, 0], row[x + 1, 0], row[x, 1], row[x, 2]])  # Y1 Y2 Cb Cr
    ds = make_image(ybr, photometric="YBR_FULL_422", bits_allocated=8, pixel_bytes=bytes(packed))
    image = decode_image(reread(ds))
    assert image.frames.shape == (1, 4, 6, 3)
    assert np.abs(image.frames[0].astype(int) - rgb).max() <= 2


def test_palette_colour_applies_the_lookup_tables() -> None:
    indices = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    ds = make_image(indices, photometric="PALETTE COLOR", bits_allocated=8)
    red = np.array([0, 65535, 0, 32768], dtype="<u2")
    green = np.array([0, 0, 65535, 32768], dtype="<u2")
    blue = np.array([65535, 0, 0, 32768], dtype="<u2")
    for name, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", lut.tobytes())
    image = decode_image(reread(ds))
    assert image.is_color
    assert image.frames[0].tolist() == [
        [[0, 0, 255], [255, 0, 0]],
        [[0, 255, 0], [128, 128, 128]],
    ]


def test_multi_frame_keeps_frame_order_and_values() -> None:
    frames = np.stack([np.full((3, 4), v, np.uint16) for v in (10, 20, 30)])
    image = decode_image(reread(make_image(frames, slope=2.0, intercept=0.0)))
    assert image.n_frames == 3
    assert [float(f[0, 0]) for f in image.frames] == [20.0, 40.0, 60.0]


def test_enhanced_per_frame_rescale_is_applied_per_frame() -> None:
    frames = np.full((2, 2, 2), 100, np.uint16)
    ds = make_image(frames)
    ds.PerFrameFunctionalGroupsSequence = []
    for slope, intercept in ((1.0, -1024.0), (2.0, 0.0)):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = slope, intercept
        group = Dataset()
        group.PixelValueTransformationSequence = [transform]
        ds.PerFrameFunctionalGroupsSequence.append(group)
    image = decode_image(reread(ds))
    assert [float(f[0, 0]) for f in image.frames] == [-924.0, 200.0]


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_compressed_synthetic_image_decodes_to_its_source(syntax: str) -> None:
    stored = RNG.integers(-1000, 3000, (32, 24), dtype=np.int16)
    ds = make_image(stored, signed=True, slope=1.0, intercept=-1024.0)
    ds.compress(syntax)
    image = decode_image(reread(ds))
    assert image.transfer_syntax_uid == syntax and not image.lossy
    assert np.array_equal(image.frames[0], stored - 1024.0)


def test_truncated_native_pixel_data_raises_truncated() -> None:
    stored = np.zeros((16, 16), np.uint16)
    ds = make_image(stored, pixel_bytes=stored.tobytes()[:-64])
    with pytest.raises(TruncatedPixelData, match="needs 512"):
        decode_image(reread(ds))


def test_missing_frame_in_multi_frame_raises_truncated() -> None:
    frames = np.zeros((3, 4, 4), np.uint16)
    ds = make_image(frames, pixel_bytes=frames[:2].tobytes())
    with pytest.raises(TruncatedPixelData):
        decode_image(reread(ds))


def test_jpeg_ls_stream_cut_short_raises_truncated() -> None:
    ds = make_image(RNG.integers(0, 4000, (32, 32), dtype=np.uint16))
    ds.compress(JPEGLSLossless)
    ds = reread(ds)
    from pydicom.encaps import encapsulate, generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3]])
    with pytest.raises(TruncatedPixelData, match="end-of-image"):
        decode_image(ds)


def test_missing_pixel_data_raises_missing() -> None:
    ds = make_image(np.zeros((2, 2), np.uint16))
    del ds.PixelData
    with pytest.raises(MissingPixelData):
        decode_image(ds)


def test_unknown_transfer_syntax_raises_unsupported() -> None:
    ds = make_image(np.zeros((2, 2), np.uint16))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video
    with pytest.raises(UnsupportedTransferSyntax):
        decode_image(ds)


def test_malformed_number_of_frames_raises_invalid_description() -> None:
    ds = make_image(np.zeros((2, 2), np.uint16))
    ds.NumberOfFrames = "0"
    with pytest.raises(InvalidPixelDescription):
        decode_image(ds)
