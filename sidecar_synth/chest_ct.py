"""Synthetic chest CT: body, two lungs, vessels and 1–3 solid nodules at known positions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import CTImageStorage

from sidecar_synth.common import (
    GroundTruth,
    Lesion,
    UidFactory,
    base_dataset,
    make_identity,
    save,
    set_pixels,
    set_stack_attributes,
    stack_geometry,
)

AIR_HU, LUNG_HU, BODY_HU, BONE_HU, NODULE_HU, VESSEL_HU = -1000.0, -850.0, 40.0, 500.0, 50.0, 40.0
NOISE_HU = 15.0


@dataclass(frozen=True)
class _Ellipsoid:
    center: np.ndarray  # mm, LPS
    axes: np.ndarray  # semi-axes along x, y, z in mm

    def inside(self, pts: np.ndarray, scale: float = 1.0) -> np.ndarray:
        total = np.zeros(pts.shape[:-1])
        for axis in range(3):  # per component: much faster than a reduction over the last axis
            total += ((pts[..., axis] - self.center[axis]) / (self.axes[axis] * scale)) ** 2
        return total <= 1.0


def _lungs(center: np.ndarray, coverage_mm: float) -> list[_Ellipsoid]:
    half_z = 0.46 * coverage_mm
    return [
        _Ellipsoid(center + np.array([side * 72.0, 5.0, 0.0]), np.array([52.0, 72.0, half_z]))
        for side in (-1.0, 1.0)
    ]


def _vessels(
    rng: np.random.Generator, lungs: list[_Ellipsoid]
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Tubes (point, unit direction, radius mm) running mostly cranio-caudally through the lungs."""
    tubes = []
    for lung in lungs:
        for _ in range(int(rng.integers(2, 5))):
            offset = rng.uniform(-0.55, 0.55, size=2) * lung.axes[:2]
            direction = np.array([rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25), 1.0])
            point = lung.center + np.array([offset[0], offset[1], 0.0])
            tubes.append(
                (point, direction / np.linalg.norm(direction), float(rng.uniform(1.2, 2.5)))
            )
    return tubes


def _tube_distance(pts: np.ndarray, point: np.ndarray, direction: np.ndarray) -> np.ndarray:
    rel = [pts[..., axis] - point[axis] for axis in range(3)]
    along = rel[0] * direction[0] + rel[1] * direction[1] + rel[2] * direction[2]
    return np.sqrt(np.maximum(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2, 0.0))


def _place_nodules(
    rng: np.random.Generator,
    count: int,
    lungs: list[_Ellipsoid],
    tubes: list[tuple[np.ndarray, np.ndarray, float]],
    min_d: float,
    max_d: float,
) -> list[tuple[np.ndarray, float]]:
    """Nodule centres well inside a lung, clear of vessels and of each other."""
    placed: list[tuple[np.ndarray, float]] = []
    while len(placed) < count:
        diameter = float(rng.uniform(min_d, max_d))
        lung = lungs[int(rng.integers(len(lungs)))]
        center = lung.center + rng.uniform(-1, 1, size=3) * lung.axes * 0.75
        if not lung.inside(center[None, :], scale=0.8)[0]:
            continue
        if any(
            _tube_distance(center[None, :], p, d)[0] < diameter / 2 + r + 6.0 for p, d, r in tubes
        ):
            continue
        if any(np.linalg.norm(center - c) < (diameter + d) / 2 + 10.0 for c, d in placed):
            continue
        placed.append((center, diameter))
    return placed


def generate_chest_ct(
    out_dir: Path,
    seed: int,
    *,
    slices: int = 100,
    rows: int = 256,
    cols: int = 256,
    fov_mm: float = 340.0,
    slice_spacing: float = 2.0,
    tilt_deg: float = 0.0,
    nodules: int | None = None,
    min_diameter_mm: float = 4.0,
    max_diameter_mm: float = 15.0,
    negative: bool = False,
) -> GroundTruth:
    """Writes a CT series (slices in shuffled file order, shuffled InstanceNumber) and its truth.

    Defaults are 100 slices of 256×256 at 1.33 mm pixels and 2 mm slice spacing; pass
    rows=cols=512 for full-size slices. `tilt_deg` tilts the slice plane about the x axis.
    """
    rng = np.random.default_rng(seed)
    uids = UidFactory("chest-ct", seed)
    ident = make_identity(rng, uids)
    series_uid = uids("series", 1)
    count = 0 if negative else (int(rng.integers(1, 4)) if nodules is None else nodules)

    center = np.array([0.0, 0.0, -200.0])
    geom = stack_geometry(center, rows, cols, fov_mm / cols, slices, slice_spacing, tilt_deg)
    coverage = slices * slice_spacing

    body = _Ellipsoid(center + np.array([0.0, 10.0, 0.0]), np.array([150.0, 105.0, 1e6]))
    lungs = _lungs(center, coverage)
    spine = _Ellipsoid(center + np.array([0.0, 80.0, 0.0]), np.array([18.0, 18.0, 1e6]))
    tubes = _vessels(rng, lungs)
    placed = _place_nodules(rng, count, lungs, tubes, min_diameter_mm, max_diameter_mm)

    sop_uids = [uids("sop", k) for k in range(slices)]
    file_order = rng.permutation(slices)
    instance_numbers = rng.permutation(slices) + 1
    in_plane = geom.in_plane(rows, cols)
    files: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for write_index, k in enumerate(file_order):
        pts = geom.positions[k] + in_plane
        hu = np.full((rows, cols), AIR_HU)
        hu[body.inside(pts)] = BODY_HU
        for lung in lungs:
            hu[lung.inside(pts)] = LUNG_HU
        hu[spine.inside(pts)] = BONE_HU
        for point, direction, radius in tubes:
            tube = (_tube_distance(pts, point, direction) <= radius) & (hu == LUNG_HU)
            hu[tube] = VESSEL_HU
        for nodule_center, diameter in placed:
            ball = _Ellipsoid(nodule_center, np.full(3, diameter / 2))
            hu[ball.inside(pts)] = NODULE_HU
        hu += rng.normal(0.0, NOISE_HU, size=hu.shape)
        stored = np.clip(np.round(hu + 1024.0), -1024, 3071)

        ds = base_dataset(
            ident, CTImageStorage, sop_uids[k], "CT", series_uid, 1, int(instance_numbers[k])
        )
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BodyPartExamined = "CHEST"
        ds.StudyDescription = "CT CHEST WITHOUT CONTRAST"
        ds.SeriesDescription = "Synthetic chest 2.0 mm"
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = ident.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        set_stack_attributes(ds, geom, int(k))
        ds.KVP = 120
        ds.ConvolutionKernel = "STANDARD"
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        set_pixels(ds, stored, bits_stored=16, signed=True)
        name = f"CT_{write_index:04d}.dcm"
        save(ds, out_dir / name)
        files.append(name)

    lesions = []
    for index, (nodule_center, diameter) in enumerate(placed):
        x, y, z = geom.to_voxel(nodule_center)
        key = int(np.clip(round(z), 0, slices - 1))
        lesions.append(
            Lesion(
                lesion_id=f"nodule-{index + 1}",
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uids[key],
                center_voxel=[x, y, z],
                center_mm=[float(v) for v in nodule_center],
                diameter_mm=round(diameter, 3),
                volume_ml=round(math.pi / 6 * diameter**3 / 1000.0, 5),
            )
        )
    options = {
        "slices": slices,
        "rows": rows,
        "cols": cols,
        "fov_mm": fov_mm,
        "slice_spacing": slice_spacing,
        "tilt_deg": tilt_deg,
    }
    return GroundTruth(
        kind="chest-ct",
        seed=seed,
        study_instance_uid=ident.study_instance_uid,
        accession_number=ident.accession_number,
        patient_id=ident.patient_id,
        series_instance_uids=[series_uid],
        negative_control=count == 0,
        files=files,
        lesions=lesions,
        options=options,
    )
