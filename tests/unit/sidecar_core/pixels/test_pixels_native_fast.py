"""The native greyscale fast path returns exactly what pydicom's native decoder returns."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sidecar_core.pixels import decode_image
from sidecar_core.pixels.decode import _describe, _native_monochrome, transfer_syntax_of


def _fast(ds: Dataset) -> np.ndarray | None:
    rows, columns, samples, bits_allocated, photometric, n_frames = _describe(ds, "PixelData")
    return _native_monochrome(ds, "PixelData", transfer_syntax_of(ds), samples, bits_allocated,
                              int(ds.get("BitsStored", bits_allocated)), photometric,
                              rows * columns * n_frames)


def _pydicom(ds: Dataset) -> np.ndarray:
    array, _ = get_decoder(transfer_syntax_of(ds)).as_array(ds)
    return np.asarray(array).reshape(-1)


def _collection() -> list[str]:
    names = []
    for path in sorted(get_testdata_files("*.dcm")):
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        if "PixelData" in ds and transfer_syntax_of(ds) in (ExplicitVRLittleEndian,
                                                            ImplicitVRLittleEndian):
            names.append(path)
    return names


@pytest.mark.parametrize("path", _collection(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_pydicoms_native_files_decode_the_same(path: str) -> None:
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fast = _fast(ds)
        except Exception:  # a broken description: decode_image names it, not our concern here
            return
        if fast is None:
            return
        expected = _pydicom(ds)
    assert fast.dtype == expected.dtype
    np.testing.assert_array_equal(fast, expected)


def _synthetic(bits_stored: int, signed: int, bits_allocated: int = 16) -> Dataset:
    rng = np.random.default_rng(bits_stored * 10 + signed)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    info = np.iinfo(dtype)
    pixels = rng.integers(info.min, info.max, size=(3, 8, 6), endpoint=True, dtype=dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "CT", 8, 6, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = signed
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = pixels.tobytes()  # garbage in the unused high bits on purpose
    return ds


@pytest.mark.parametrize(("bits_stored", "signed", "bits_allocated"),
                         [(12, 0, 16), (12, 1, 16), (16, 1, 16), (16, 0, 16), (10, 1, 16),
                          (8, 0, 8), (7, 1, 8), (1, 0, 8)])
def test_unused_high_bits_are_corrected_as_pydicom_does(bits_stored: int, signed: int,
                                                        bits_allocated: int) -> None:
    ds = _synthetic(bits_stored, signed, bits_allocated)
    fast = _fast(ds)
    assert fast is not None
    np.testing.assert_array_equal(fast, _pydicom(ds))
    assert decode_image(ds).frames.shape == (3, 8, 6)


def test_everything_else_goes_through_pydicom() -> None:
    ds = _synthetic(12, 1)
    ds.PhotometricInterpretation = "RGB"
    assert _fast(ds) is None
    ds = _synthetic(12, 1)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.2"  # big endian
    assert _fast(ds) is None
    ds = _synthetic(12, 1)
    ds.PixelRepresentation = 2
    assert _fast(ds) is None
