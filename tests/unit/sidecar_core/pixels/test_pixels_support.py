"""Builders of synthetic DICOM for the pixel tests, written and re-read with pydicom, and checks."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def make_image(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_allocated: int = 16,
    bits_stored: int | None = None,
    signed: bool = False,
    modality: str = "CT",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[Sequence[float], Sequence[float]] | None = None,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] | None = AXIAL,
    spacing: Sequence[float] | None = (0.7, 0.7),
    instance_number: int | None = 1,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    sop_uid: str | None = None,
    planar_configuration: int = 0,
    pixel_bytes: bytes | None = None,
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    """A minimal CT/MR/SC image whose Pixel Data is exactly ``stored`` (or ``pixel_bytes``).

    ``stored`` is ``[Y, X]``, ``[N, Y, X]`` (frames) or ``[..., 3]`` (colour, pixel-interleaved
    unless ``planar_configuration`` is 1); its dtype is written as is, so signed values with
    BitsStored < BitsAllocated must already be masked to BitsStored bits by the caller.
    """
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    frames = stored if stored.ndim == (4 if colour else 3) else stored[None]
    sop_class = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2", series_uid
    ds.Modality = modality
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None and position is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [float(v) for v in spacing]
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    if frames.shape[0] > 1:
        ds.NumberOfFrames = int(frames.shape[0])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = planar_configuration
        if planar_configuration == 1:
            frames = np.ascontiguousarray(np.moveaxis(frames, 3, 1))
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope or 1.0, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = list(window[0]), list(window[1])
    ds.PixelData = pixel_bytes if pixel_bytes is not None else frames.tobytes()
    return ds


def reread(ds: Dataset) -> Dataset:
    """Write ``ds`` as a DICOM file and read it back, as the ingest path would."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def make_series(
    values: Sequence[float],
    positions: Sequence[Sequence[float]] | None,
    *,
    orientation: Sequence[float] = AXIAL,
    instance_numbers: Sequence[int | None] | None = None,
    size: int = 8,
    modality: str = "CT",
) -> list[Dataset]:
    """One single-frame slice per value: every pixel of slice ``i`` stores ``values[i]``."""
    series_uid = generate_uid()
    out = []
    for i, value in enumerate(values):
        pixels = np.full((size, size), value, dtype=np.int16)
        out.append(
            reread(
                make_image(
                    pixels,
                    signed=True,
                    modality=modality,
                    position=positions[i] if positions is not None else None,
                    orientation=orientation,
                    instance_number=instance_numbers[i] if instance_numbers else i + 1,
                    series_uid=series_uid,
                )
            )
        )
    return out


def test_make_image_round_trips_through_a_file() -> None:
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4)
    ds = reread(make_image(stored, position=(1, 2, 3)))
    assert (ds.Rows, ds.Columns, ds.BitsStored) == (3, 4, 16)
    assert np.array_equal(np.frombuffer(ds.PixelData, "<u2").reshape(3, 4), stored)
    assert [float(v) for v in ds.ImagePositionPatient] == [1.0, 2.0, 3.0]


def test_make_series_stores_one_value_per_slice() -> None:
    series = make_series([5, 7], [(0, 0, 0), (0, 0, 1)])
    assert [int(np.frombuffer(ds.PixelData, "<i2")[0]) for ds in series] == [5, 7]
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
