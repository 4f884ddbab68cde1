"""Synthetic studies: valid DICOM, deterministic, shuffled, with truth the files agree with."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    MRImageStorage,
)

from sidecar_core.dicom.uids import is_valid_uid
from sidecar_synth import GROUND_TRUTH_FILE, GroundTruth, generate
from sidecar_synth.readback import read_study

SMALL_CT = {"slices": 40, "rows": 128, "cols": 128, "fov_mm": 340.0, "slice_spacing": 5.0}
SMALL_MR = {"slices": 24, "rows": 128, "cols": 128}


def digest(study: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(study.iterdir()):
        sha.update(path.name.encode() + path.read_bytes())
    return sha.hexdigest()


def datasets(study: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(study.glob("*.dcm"))]


def patient_point(ds: pydicom.Dataset, x: float, y: float) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1 from the file's own attributes."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return ipp + iop[:3] * col_mm * x + iop[3:] * row_mm * y


@pytest.mark.parametrize(
    ("kind", "opts"), [("chest-ct", SMALL_CT), ("mammo", {}), ("brain-mr", SMALL_MR)]
)
def test_same_seed_same_bytes_other_seed_other_uids(tmp_path: Path, kind: str, opts: dict) -> None:
    first = generate(kind, tmp_path / "a", 11, **opts)
    second = generate(kind, tmp_path / "b", 11, **opts)
    third = generate(kind, tmp_path / "c", 12, **opts)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert first == second
    assert third.study_instance_uid != first.study_instance_uid
    assert GroundTruth.load(tmp_path / "a") == first
    assert (tmp_path / "a" / GROUND_TRUTH_FILE).exists()


@pytest.mark.parametrize(
    ("kind", "opts", "sop_class", "modality", "body_part"),
    [
        ("chest-ct", SMALL_CT, CTImageStorage, "CT", "CHEST"),
        ("mammo", {}, DigitalMammographyXRayImageStorageForPresentation, "MG", "BREAST"),
        ("brain-mr", SMALL_MR, MRImageStorage, "MR", "HEAD"),
    ],
)
def test_files_are_valid_part10_with_identifiers(
    tmp_path: Path, kind: str, opts: dict, sop_class: str, modality: str, body_part: str
) -> None:
    truth = generate(kind, tmp_path, 5, **opts)
    found = datasets(tmp_path)
    assert len(found) == len(truth.files)
    sop_uids = set()
    for ds in found:
        assert ds.preamble is not None and ds.file_meta.TransferSyntaxUID
        assert ds.SOPClassUID == sop_class == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert is_valid_uid(uid), uid
        assert ds.Modality == modality and ds.BodyPartExamined == body_part
        assert ds.StudyInstanceUID == truth.study_instance_uid
        assert ds.AccessionNumber == truth.accession_number and ds.PatientID == truth.patient_id
        assert ds.StudyDescription and ds.SeriesDescription and str(ds.PatientName)
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(found)


def test_ct_is_shuffled_and_instance_numbers_do_not_follow_position(tmp_path: Path) -> None:
    generate("chest-ct", tmp_path, 3, **SMALL_CT)
    found = [pydicom.dcmread(tmp_path / name) for name in GroundTruth.load(tmp_path).files]
    z = [float(ds.ImagePositionPatient[2]) for ds in found]
    assert z != sorted(z) and z != sorted(z, reverse=True)
    by_position = sorted(found, key=lambda ds: float(ds.ImagePositionPatient[2]))
    numbers = [int(ds.InstanceNumber) for ds in by_position]
    assert numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True)
    assert sorted(numbers) == list(range(1, len(found) + 1))
    assert {float(ds.RescaleIntercept) for ds in found} == {-1024.0}
    assert all(ds.pixel_array.dtype == np.int16 for ds in found[:3])


@pytest.mark.parametrize("tilt", [0.0, 17.0])
def test_ct_truth_matches_the_files_geometry(tmp_path: Path, tilt: float) -> None:
    truth = generate("chest-ct", tmp_path, 21, nodules=3, tilt_deg=tilt, **SMALL_CT)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets(tmp_path)}
    arrays = read_study(tmp_path)
    assert len(truth.lesions) == 3 and not truth.negative_control
    for lesion in truth.lesions:
        x, y, z = lesion.center_voxel
        key = by_uid[lesion.sop_instance_uid]
        assert str(arrays["sop_instance_uids"][round(z)]) == lesion.sop_instance_uid
        # the key slice's own IPP/IOP/PixelSpacing, plus the offset along the normal
        iop = np.array([float(v) for v in key.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        point = patient_point(key, x, y) + normal * (z - round(z)) * float(key.SliceThickness)
        assert np.allclose(point, lesion.center_mm, atol=0.05)
        hu = arrays["volume"][round(z), round(y), round(x)]
        assert -100 < hu < 200, "the centre voxel is solid nodule, not lung"
        assert 4.0 <= lesion.diameter_mm <= 15.0
        assert lesion.volume_ml == pytest.approx(np.pi / 6 * lesion.diameter_mm**3 / 1000, 1e-3)


def test_ct_supports_512_and_negative_controls(tmp_path: Path) -> None:
    truth = generate("chest-ct", tmp_path, 2, slices=3, rows=512, cols=512, negative=True)
    assert truth.negative_control and truth.lesions == []
    ds = datasets(tmp_path)[0]
    assert (ds.Rows, ds.Columns) == (512, 512)
    assert float(ds.PixelSpacing[0]) == pytest.approx(340 / 512)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_mammo_views_and_masses(tmp_path: Path, photometric: str) -> None:
    truth = generate("mammo", tmp_path, 8, masses=2, photometric=photometric)
    found = datasets(tmp_path)
    views = {(ds.ImageLaterality, ds.ViewPosition) for ds in found}
    assert views == {("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")}
    assert {ds.PhotometricInterpretation for ds in found} == {photometric}
    assert all(
        len(ds.ImagerPixelSpacing) == 2 and ds.PresentationIntentType == "FOR PRESENTATION"
        for ds in found
    )
    by_uid = {ds.SOPInstanceUID: ds for ds in found}
    assert len(truth.lesions) == 2
    for lesion in truth.lesions:
        ds = by_uid[lesion.sop_instance_uid]
        assert lesion.view == f"{ds.ImageLaterality} {ds.ViewPosition}"
        assert lesion.center_mm is None
        x, y, _ = (round(v) for v in lesion.center_voxel)
        pixels = ds.pixel_array.astype(float)
        if photometric == "MONOCHROME1":
            pixels = 4095 - pixels
        centre = pixels[y - 2 : y + 3, x - 2 : x + 3].mean()
        assert centre > np.median(pixels[pixels > 500]) + 150, "mass is denser than the breast"


def test_brain_lesion_volume_and_position(tmp_path: Path) -> None:
    truth = generate("brain-mr", tmp_path, 4, lesions=2, **SMALL_MR)
    arrays = read_study(tmp_path)
    spacing = float(arrays["slice_spacing"])
    voxel_ml = float(np.prod(arrays["pixel_spacing"])) * spacing / 1000
    assert 24 <= arrays["volume"].shape[0] <= 40
    bright = arrays["volume"] > 650
    assert bright.sum() * voxel_ml == pytest.approx(
        sum(t.volume_ml for t in truth.lesions), rel=0.05
    )
    for lesion in truth.lesions:
        x, y, z = (round(v) for v in lesion.center_voxel)
        assert bright[z, y, x]
        assert (
            str(arrays["sop_instance_uids"][z]) == lesion.sop_instance_uid
            or bright[list(arrays["sop_instance_uids"]).index(lesion.sop_instance_uid)].any()
        )


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown synthetic study kind"):
        generate("pet-ct", tmp_path, 1)
