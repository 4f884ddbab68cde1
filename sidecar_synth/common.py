"""Shared pieces of the synthetic study generators: ground truth, deterministic UIDs, files."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

GROUND_TRUTH_FILE = "ground_truth.json"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"
_FIRST_NAMES = ["ALEX", "SAM", "KIM", "ROBIN", "JO", "NOA", "ARI", "LEE"]
_LAST_NAMES = ["SYNTH", "PHANTOM", "TESTCASE", "SAMPLE", "MODEL", "DUMMY"]


@dataclass
class Lesion:
    """One known lesion. Pixel/voxel coordinates are (x=column, y=row, z=slice index)."""

    lesion_id: str
    series_instance_uid: str
    sop_instance_uid: str  # the key slice / image that contains the lesion centre
    center_voxel: list[float]  # [x, y, z]; z is the index in position-sorted order (0 for MG)
    center_mm: list[float] | None  # [x, y, z] patient LPS; None where the image has no geometry
    diameter_mm: float
    volume_ml: float
    view: str = ""  # mammography: "<laterality> <view>", e.g. "L CC"
    laterality: str = ""
    view_position: str = ""


@dataclass
class GroundTruth:
    """What a synthetic study contains; written as ground_truth.json beside its files."""

    kind: str
    seed: int
    study_instance_uid: str
    accession_number: str
    patient_id: str
    series_instance_uids: list[str]
    negative_control: bool
    files: list[str]  # file names in write order (shuffled for CT)
    lesions: list[Lesion] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        data = json.loads(text)
        data["lesions"] = [Lesion(**lesion) for lesion in data.get("lesions", [])]
        return cls(**data)

    @classmethod
    def load(cls, study_dir: str | Path) -> GroundTruth:
        return cls.from_json((Path(study_dir) / GROUND_TRUTH_FILE).read_text())

    def write(self, study_dir: str | Path) -> Path:
        path = Path(study_dir) / GROUND_TRUTH_FILE
        path.write_text(self.to_json() + "\n")
        return path


class UidFactory:
    """Deterministic UIDs: the same seed and kind always give the same UIDs."""

    def __init__(self, kind: str, seed: int) -> None:
        self._base = ["sidecar-synth", kind, str(seed)]

    def __call__(self, *parts: object) -> str:
        return str(generate_uid(entropy_srcs=[*self._base, *(str(p) for p in parts)]))


@dataclass
class StudyIdentity:
    """Patient and study attributes shared by every file of one synthetic study."""

    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    patient_sex: str
    birth_date: str
    study_date: str
    study_time: str
    frame_of_reference_uid: str


def make_identity(
    rng: np.random.Generator, uids: UidFactory, sex: str | None = None
) -> StudyIdentity:
    """Synthetic, obviously fake patient identity and study identifiers."""
    day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 50)))
    first = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]
    last = _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
    return StudyIdentity(
        study_instance_uid=uids("study"),
        accession_number=f"SYN{int(rng.integers(10**8, 10**9))}",
        patient_id=f"SYNPAT{int(rng.integers(10**5, 10**6))}",
        patient_name=f"{last}^{first}",
        patient_sex=sex or ("F" if rng.random() < 0.5 else "M"),
        birth_date=birth.strftime("%Y%m%d"),
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        frame_of_reference_uid=uids("frame-of-reference"),
    )


def base_dataset(
    ident: StudyIdentity,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
) -> Dataset:
    """A dataset with file meta, patient, study, series and SOP common attributes filled in."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "SIDECAR_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ident.study_time
    ds.AccessionNumber = ident.accession_number
    ds.Modality = modality
    ds.Manufacturer = "Sidecar Synthetic Phantom"
    ds.InstitutionName = "Synthetic Hospital"
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.patient_sex
    ds.StudyInstanceUID = ident.study_instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int, signed: bool) -> None:
    """Stores a 2-D monochrome array as uncompressed pixel data."""
    rows, cols = pixels.shape
    ds.SamplesPerPixel = 1
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels.astype("<i2" if signed else "<u2")).tobytes()


def save(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-correlated noise (FFT filtering; no scipy needed)."""
    white = rng.standard_normal(shape)
    freqs = np.meshgrid(*(np.fft.fftfreq(n) for n in shape), indexing="ij")
    radius2 = sum(f**2 for f in freqs)
    field_ = np.real(
        np.fft.ifftn(np.fft.fftn(white) * np.exp(-2 * (np.pi * sigma_px) ** 2 * radius2))
    )
    std = float(field_.std())
    return field_ / std if std > 0 else field_


def ellipse_mask(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


@dataclass(frozen=True)
class StackGeometry:
    """Geometry of a stack of parallel slices centred on `center` (mm, LPS)."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    positions: np.ndarray  # [Z, 3] ImagePositionPatient of each slice, ascending along normal
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    slice_spacing: float

    def in_plane(self, rows: int, cols: int) -> np.ndarray:
        """[rows, cols, 3] offsets of each pixel centre from the slice's position."""
        jj, ii = np.meshgrid(np.arange(cols), np.arange(rows))
        return (
            self.row_dir * self.pixel_spacing[1] * jj[..., None]
            + self.col_dir * self.pixel_spacing[0] * ii[..., None]
        )

    def to_voxel(self, point: np.ndarray) -> list[float]:
        """Patient mm → [x, y, z] (column, row, slice index)."""
        rel = np.asarray(point, dtype=float) - self.origin
        return [
            float(rel @ self.row_dir / self.pixel_spacing[1]),
            float(rel @ self.col_dir / self.pixel_spacing[0]),
            float(rel @ self.normal / self.slice_spacing),
        ]


def stack_geometry(
    center: np.ndarray,
    rows: int,
    cols: int,
    pixel_mm: float,
    slices: int,
    slice_spacing: float,
    tilt_deg: float,
) -> StackGeometry:
    """Axial stack (optionally tilted about the x axis by `tilt_deg`) centred on `center`."""
    tilt = np.radians(tilt_deg)
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, np.cos(tilt), np.sin(tilt)])
    normal = np.cross(row_dir, col_dir)
    origin = (
        center
        - row_dir * pixel_mm * (cols - 1) / 2
        - col_dir * pixel_mm * (rows - 1) / 2
        - normal * slice_spacing * (slices - 1) / 2
    )
    positions = origin + np.outer(np.arange(slices) * slice_spacing, normal)
    return StackGeometry(
        row_dir, col_dir, normal, origin, positions, (pixel_mm, pixel_mm), slice_spacing
    )


def set_stack_attributes(ds: Dataset, geom: StackGeometry, k: int) -> None:
    """ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceLocation of slice k."""
    ds.ImagePositionPatient = [round(float(v), 4) for v in geom.positions[k]]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*geom.row_dir, *geom.col_dir)]
    ds.SliceLocation = round(float(geom.positions[k] @ geom.normal), 4)
    ds.PixelSpacing = [round(v, 6) for v in geom.pixel_spacing]
    ds.SliceThickness = geom.slice_spacing
