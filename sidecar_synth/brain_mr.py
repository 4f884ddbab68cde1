"""Synthetic axial brain MR (FLAIR-like): head, skull, brain, ventricles, 0–2 bright lesions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.uid import MRImageStorage

from sidecar_synth.common import (
    GroundTruth,
    Lesion,
    UidFactory,
    base_dataset,
    make_identity,
    save,
    set_pixels,
    set_stack_attributes,
    smooth_noise,
    stack_geometry,
)

SCALP, SKULL, BRAIN, CSF, LESION, NOISE = 520.0, 60.0, 400.0, 120.0, 760.0, 18.0
HEAD_AXES = np.array([74.0, 92.0, 78.0])  # semi-axes (x, y, z) of the scalp surface, mm
BRAIN_INSET = np.array([11.0, 11.0, 11.0])  # scalp + skull thickness, mm
VENTRICLES = [(np.array([s * 9.0, -5.0, 8.0]), np.array([6.0, 22.0, 10.0])) for s in (-1.0, 1.0)]


def _inside(pts: np.ndarray, center: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return (((pts - center) / axes) ** 2).sum(axis=-1) <= 1.0


def _place_lesions(rng: np.random.Generator, count: int, center: np.ndarray) -> list[tuple]:
    """(centre mm, semi-axes mm) of ellipsoidal lesions in the deep white matter."""
    brain_axes = HEAD_AXES - BRAIN_INSET
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    while len(placed) < count:
        diameter = float(rng.uniform(7.0, 20.0))
        axes = diameter / 2 * rng.uniform(0.85, 1.15, size=3)
        pos = center + rng.uniform(-0.6, 0.6, size=3) * brain_axes
        if not _inside(pos[None], center, brain_axes * 0.65)[0]:
            continue
        if any(
            np.linalg.norm(pos - center - vc) < diameter / 2 + va.max() + 4 for vc, va in VENTRICLES
        ):
            continue
        if any(np.linalg.norm(pos - c) < diameter / 2 + a.max() + 10 for c, a in placed):
            continue
        placed.append((pos, axes))
    return placed


def generate_brain_mr(
    out_dir: Path,
    seed: int,
    *,
    slices: int = 28,
    rows: int = 256,
    cols: int = 256,
    fov_mm: float = 230.0,
    slice_spacing: float = 5.0,
    tilt_deg: float = 0.0,
    lesions: int | None = None,
    negative: bool = False,
) -> GroundTruth:
    """Writes an axial 2-D MR series (shuffled file order) and its truth.

    A lesion's `volume_ml` is its rasterised voxel count × voxel volume, the answer a perfect
    segmentation of these slices gives; `diameter_mm` is its nominal (mean) diameter.
    """
    rng = np.random.default_rng(seed)
    uids = UidFactory("brain-mr", seed)
    ident = make_identity(rng, uids)
    series_uid = uids("series", 1)
    count = 0 if negative else (int(rng.integers(0, 3)) if lesions is None else lesions)
    center = np.array([0.0, 10.0, 40.0])
    geom = stack_geometry(center, rows, cols, fov_mm / cols, slices, slice_spacing, tilt_deg)
    placed = _place_lesions(rng, count, center)
    texture = smooth_noise(rng, (slices, rows, cols), sigma_px=3.0)

    in_plane = geom.in_plane(rows, cols)
    volume = np.zeros((slices, rows, cols))
    lesion_masks = np.zeros((len(placed), slices, rows, cols), dtype=bool)
    for k in range(slices):
        pts = geom.positions[k] + in_plane
        img = np.zeros((rows, cols))
        img[_inside(pts, center, HEAD_AXES)] = SCALP
        img[_inside(pts, center, HEAD_AXES - 4.0)] = SKULL
        brain = _inside(pts, center, HEAD_AXES - BRAIN_INSET)
        img[brain] = BRAIN + 25.0 * texture[k][brain]
        for vc, va in VENTRICLES:
            img[_inside(pts, center + vc, va) & brain] = CSF
        for index, (lc, la) in enumerate(placed):
            lesion_masks[index, k] = _inside(pts, lc, la) & brain
            img[lesion_masks[index, k]] = LESION
        volume[k] = img + rng.normal(0.0, NOISE, size=img.shape)
    stored = np.clip(np.round(np.abs(volume)), 0, 4095)

    sop_uids = [uids("sop", k) for k in range(slices)]
    file_order = rng.permutation(slices)
    instance_numbers = rng.permutation(slices) + 1
    files: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for write_index, k in enumerate(file_order):
        ds = base_dataset(
            ident, MRImageStorage, sop_uids[k], "MR", series_uid, 3, int(instance_numbers[k])
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.BodyPartExamined = "HEAD"
        ds.StudyDescription = "MRI BRAIN WITHOUT CONTRAST"
        ds.SeriesDescription = "Synthetic AX T2 FLAIR"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = ident.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        set_stack_attributes(ds, geom, int(k))
        ds.SpacingBetweenSlices = slice_spacing
        ds.ScanningSequence = "IR"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 9000
        ds.EchoTime = 120
        ds.InversionTime = 2500
        ds.EchoTrainLength = 16
        ds.MagneticFieldStrength = 1.5
        ds.ImagedNucleus = "1H"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.WindowCenter = 400
        ds.WindowWidth = 900
        set_pixels(ds, stored[k], bits_stored=12, signed=False)
        name = f"MR_{write_index:04d}.dcm"
        save(ds, out_dir / name)
        files.append(name)

    voxel_ml = geom.pixel_spacing[0] * geom.pixel_spacing[1] * slice_spacing / 1000.0
    truths = []
    for index, (lc, la) in enumerate(placed):
        x, y, z = geom.to_voxel(lc)
        key = int(np.argmax(lesion_masks[index].sum(axis=(1, 2))))
        truths.append(
            Lesion(
                lesion_id=f"lesion-{index + 1}",
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uids[key],
                center_voxel=[x, y, z],
                center_mm=[float(v) for v in lc],
                diameter_mm=round(float(2 * la.mean()), 3),
                volume_ml=round(float(lesion_masks[index].sum()) * voxel_ml, 5),
            )
        )
    return GroundTruth(
        kind="brain-mr",
        seed=seed,
        study_instance_uid=ident.study_instance_uid,
        accession_number=ident.accession_number,
        patient_id=ident.patient_id,
        series_instance_uids=[series_uid],
        negative_control=count == 0,
        files=files,
        lesions=truths,
        options={
            "slices": slices,
            "rows": rows,
            "cols": cols,
            "fov_mm": fov_mm,
            "slice_spacing": slice_spacing,
            "tilt_deg": tilt_deg,
            "nominal_volume_ml": [
                round(math.pi * 4 / 3 * float(np.prod(a)) / 1000, 5) for _, a in placed
            ],
        },
    )
