"""Small builders shared by tests: facilities, DICOM objects made with pydicom."""

from __future__ import annotations

import copy
import uuid
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, text


def add_facility(
    database_url: str,
    name: str,
    ae_title: str | None = None,
    quiet_period_s: float = 5.0,
    shadow_mode: bool = False,
) -> uuid.UUID:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    fid = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into facilities (id, name, ae_title, shadow_mode, quiet_period_s) "
                "values (:id, :n, :ae, :sm, :q)"
            ),
            {"id": fid, "n": name, "ae": ae_title, "sm": shadow_mode, "q": quiet_period_s},
        )
    engine.dispose()
    return fid


def ct_slice(
    study_uid: str | None = None,
    series_uid: str | None = None,
    z: float = 0.0,
    accession: str = "ACC1",
    rows: int = 16,
    cols: int = 16,
) -> Dataset:
    """A tiny but valid CT Image Storage dataset."""
    meta = FileMetaDataset()
    sop = generate_uid()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.AccessionNumber = accession
    ds.Modality = "CT"
    ds.PatientID = "SYNTH-1"
    ds.PatientName = "Synthetic^Patient"
    ds.BodyPartExamined = "CHEST"
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = b"\x00\x04" * rows * cols
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def declaring_huge_pixels(ds: Dataset, rows: int = 65535, columns: int = 65535,
                          frames: int = 1000) -> Dataset:
    """`ds` (a copy, a new SOP Instance UID) whose header declares rows × columns × frames in
    JPEG 2000 while its pixel data is one 32-byte fragment: what a hostile or broken sender can
    claim in a few hundred bytes."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    huge = copy.deepcopy(ds)
    sop = generate_uid()
    huge.SOPInstanceUID = huge.file_meta.MediaStorageSOPInstanceUID = sop
    huge.file_meta.TransferSyntaxUID = JPEG2000Lossless
    huge.Rows, huge.Columns, huge.NumberOfFrames = rows, columns, frames
    huge.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 26 + b"\xff\xd9"])
    huge["PixelData"].VR = "OB"
    huge["PixelData"].is_undefined_length = True
    return huge
