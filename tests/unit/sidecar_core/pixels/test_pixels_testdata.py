"""pydicom's own test files: each decodes or fails with a named error; values match twins."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset

from sidecar_core.pixels import (
    CorruptPixelData,
    DecodedImage,
    InvalidPixelDescription,
    MissingPixelData,
    PixelDecodeError,
    TruncatedPixelData,
    decode_image,
)

# Files of pydicom's test collection used by name below.
MR_SMALL = "MR_small.dcm"
MR_SMALL_TWINS = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
]
CT_SMALL = "CT_small.dcm"
RTDOSE = "rtdose.dcm"
RTDOSE_TWINS = ["rtdose_rle.dcm", "rtdose_expb.dcm"]
PALETTE = "examples_palette.dcm"
DEFLATED = "image_dfl.dcm"
SC_RGB_REFERENCE = "SC_rgb_rle.dcm"  # lossless RGB colour bars, 100 x 100
SC_RGB_LOSSLESS = ["SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_16bit.dcm",
                   "SC_rgb_rle_32bit.dcm"]  # fmt: skip
SC_RGB_LOSSY_FULL_CHROMA = {  # name: max abs difference per sample
    "SC_rgb_dcmtk_+eb+cr.dcm": 2,  # RGB JPEG baseline
    "SC_rgb_jls_lossy_line.dcm": 3,  # JPEG-LS near-lossless
    "SC_rgb_jls_lossy_sample.dcm": 3,
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": 8,  # YBR_FULL JPEG baseline
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": 8,  # YBR_FULL_422 JPEG baseline
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": 8,
    "SC_rgb_jpeg_dcmtk.dcm": 8,
    "SC_ybr_full_422_uncompressed.dcm": 8,
}
SC_RGB_SUBSAMPLED = [  # chroma subsampled: colour edges smear, so compare the mean error
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
]
EXPECTED_ERRORS: dict[str, type[PixelDecodeError]] = {
    "MR_truncated.dcm": TruncatedPixelData,
    "badVR.dcm": InvalidPixelDescription,  # NumberOfFrames '1A'
    "meta_missing_tsyntax.dcm": InvalidPixelDescription,  # no Rows
    "nested_priv_SQ.dcm": InvalidPixelDescription,
    "JPEG-lossy.dcm": CorruptPixelData,  # libjpeg: misplaced marker segment
    "JPEG2000-embedded-sequence-delimiter.dcm": CorruptPixelData,
}
NOT_DICOM_SUFFIXES = {".txt", ".json", ".dump", ".gz", ".icc"}


def _collection() -> list[str]:
    files = [f for f in get_testdata_files() if os.path.isfile(f)]
    return sorted(
        f for f in files if Path(f).suffix not in NOT_DICOM_SUFFIXES and Path(f).name != "README"
    )


def _read(path: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _decode(name: str) -> DecodedImage:
    return decode_image(_read(get_testdata_file(name)))


def _raw(name: str, dtype: str) -> np.ndarray:
    """Native pixel values read straight from the bytes, independently of pydicom's decoders."""
    ds = _read(get_testdata_file(name))
    count = ds.Rows * ds.Columns * int(ds.get("NumberOfFrames", 1) or 1) * ds.SamplesPerPixel
    return np.frombuffer(ds.PixelData, dtype=dtype, count=count)


@pytest.mark.parametrize("path", _collection(), ids=lambda p: Path(p).name)
def test_every_collection_file_decodes_or_raises_a_named_error(path: str) -> None:
    ds = _read(path)
    name = Path(path).name
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if name in EXPECTED_ERRORS:
        with pytest.raises(EXPECTED_ERRORS[name]):
            decode_image(ds)
        return
    if not has_pixels:
        with pytest.raises(MissingPixelData):
            decode_image(ds)
        return
    image = decode_image(ds)  # anything else must decode: every codec plugin is installed
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (frames, ds.Rows, ds.Columns) + ((3,) if image.is_color else ())
    assert image.frames.shape == expected
    if image.is_color:
        assert image.frames.dtype == np.uint8
    else:
        assert image.frames.dtype == np.float32 and np.isfinite(image.frames).all()


def test_named_errors_are_specific_subclasses() -> None:
    assert all(cls is not PixelDecodeError for cls in EXPECTED_ERRORS.values())
    assert all(issubclass(cls, PixelDecodeError) for cls in EXPECTED_ERRORS.values())


def test_mr_small_matches_its_raw_bytes() -> None:
    image = _decode(MR_SMALL)
    assert np.array_equal(image.frames[0].ravel(), _raw(MR_SMALL, "<i2").astype(np.float32))
    assert (image.frames.min(), image.frames.max()) == (127.0, 2145.0)


@pytest.mark.parametrize("name", MR_SMALL_TWINS)
def test_mr_small_twins_equal_the_uncompressed_file(name: str) -> None:
    assert np.array_equal(_decode(name).frames, _decode(MR_SMALL).frames)


def test_ct_small_is_in_hounsfield_units() -> None:
    ds = _read(get_testdata_file(CT_SMALL))
    expected = _raw(CT_SMALL, "<i2") * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = _decode(CT_SMALL)
    assert np.array_equal(image.frames[0].ravel(), expected.astype(np.float32))
    assert image.frames.min() == -896.0 and image.frames.max() == 1167.0


def test_rtdose_is_scaled_to_gray_and_twins_agree() -> None:
    ds = _read(get_testdata_file(RTDOSE))
    expected = _raw(RTDOSE, "<u4").reshape(15, 10, 10) * float(ds.DoseGridScaling)
    image = _decode(RTDOSE)
    assert image.n_frames == 15
    assert np.allclose(image.frames, expected, rtol=1e-6)
    for twin in RTDOSE_TWINS:
        assert np.array_equal(_decode(twin).frames, image.frames)


def test_deflated_transfer_syntax_decodes() -> None:
    image = _decode(DEFLATED)
    assert image.frames.shape == (1, 512, 512)
    assert (image.frames.min(), image.frames.max()) == (0.0, 255.0)


def test_palette_file_matches_an_independent_lookup() -> None:
    ds = _read(get_testdata_file(PALETTE))
    first_mapped = int(ds.RedPaletteColorLookupTableDescriptor[1])
    indices = np.clip(_raw(PALETTE, "u1").astype(int) - first_mapped, 0, 255)
    expected = np.stack(
        [
            np.frombuffer(getattr(ds, f"{c}PaletteColorLookupTableData"), "<u2")[indices] >> 8
            for c in ("Red", "Green", "Blue")
        ],
        axis=-1,
    ).reshape(ds.Rows, ds.Columns, 3)
    image = _decode(PALETTE)
    assert image.is_color and np.array_equal(image.frames[0], expected)


def test_sc_rgb_reference_is_the_colour_bar_pattern() -> None:
    image = _decode(SC_RGB_REFERENCE).frames[0]
    bands = [  # ten 10-row bands, as pydicom documents its SC_rgb test images
        (255, 0, 0), (255, 128, 128), (0, 255, 0), (128, 255, 128), (0, 0, 255),
        (128, 128, 255), (0, 0, 0), (64, 64, 64), (192, 192, 192), (255, 255, 255),
    ]  # fmt: skip
    for band, colour in enumerate(bands):
        assert (image[band * 10 : band * 10 + 10] == colour).all()


@pytest.mark.parametrize("name", SC_RGB_LOSSLESS)
def test_lossless_rgb_twins_equal_the_reference(name: str) -> None:
    assert np.array_equal(_decode(name).frames[:1], _decode(SC_RGB_REFERENCE).frames)


@pytest.mark.parametrize("name", sorted(SC_RGB_LOSSY_FULL_CHROMA))
def test_lossy_rgb_and_ybr_twins_are_within_tolerance(name: str) -> None:
    image = _decode(name)
    diff = np.abs(image.frames.astype(int) - _decode(SC_RGB_REFERENCE).frames.astype(int))
    assert image.is_color and diff.max() <= SC_RGB_LOSSY_FULL_CHROMA[name]


@pytest.mark.parametrize("name", SC_RGB_SUBSAMPLED)
def test_subsampled_ybr_twins_are_close_on_average(name: str) -> None:
    image = _decode(name)
    diff = np.abs(image.frames.astype(int) - _decode(SC_RGB_REFERENCE).frames.astype(int))
    assert diff.mean() < 3.5 and np.percentile(diff, 90) <= 8


def test_multi_frame_colour_file_keeps_its_frames() -> None:
    image = _decode("SC_rgb_rle_2frame.dcm")
    assert image.n_frames == 2
    assert np.array_equal(image.frames[1], 255 - image.frames[0])  # second frame is inverted


def test_ybr_full_422_jpeg_multi_frame_decodes_every_frame() -> None:
    image = _decode("examples_ybr_color.dcm")
    assert image.frames.shape == (30, 240, 320, 3)
    assert image.lossy
    assert not np.array_equal(image.frames[0], image.frames[29])
