"""Synthetic 4-view screening mammogram (L/R × CC/MLO) with 0–2 masses at known pixel positions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation as MG_FOR_PRESENTATION

from sidecar_synth.common import (
    GroundTruth,
    Lesion,
    UidFactory,
    base_dataset,
    make_identity,
    save,
    set_pixels,
    smooth_noise,
)

VIEWS = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
_VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
# PatientOrientation (row direction \ column direction) as in PS3.17 mammography examples.
_ORIENTATION = {
    ("R", "CC"): ["P", "L"],
    ("L", "CC"): ["A", "R"],
    ("R", "MLO"): ["P", "FL"],
    ("L", "MLO"): ["A", "FR"],
}
MAX_VALUE = 4095
BACKGROUND, FAT, GLAND_AMPLITUDE, MASS_CONTRAST, NOISE = 60.0, 1400.0, 110.0, 420.0, 25.0


def _breast_mask(rows: int, cols: int, laterality: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Breast outline (half ellipse on the chest wall) and the normalised depth 0..1 into it."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    # the chest wall is at x = 0 for L, at the last column for R
    depth_x = xx if laterality == "L" else (cols - 1 - xx)
    cy = rows * (0.5 if view == "CC" else 0.42)
    ry = rows * (0.42 if view == "CC" else 0.5)
    rx = cols * 0.78
    radial = np.sqrt((depth_x / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return radial <= 1.0, np.clip(radial, 0.0, 1.0)


def _view_code(view: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodeMeaning = _VIEW_CODES[view]
    item.CodingSchemeDesignator = "SCT"
    return item


def generate_mammo(
    out_dir: Path,
    seed: int,
    *,
    rows: int = 512,
    cols: int = 416,
    pixel_spacing_mm: float = 0.5,
    photometric: str = "MONOCHROME2",
    masses: int | None = None,
    negative: bool = False,
    noise_sigma: float = NOISE,
    tissue_level: float | None = None,
    mass_diameter_mm: tuple[float, float] = (8.0, 24.0),
) -> GroundTruth:
    """Writes four MG For Presentation images and their truth (masses 8–24 mm, one view each).

    Images are downsampled (default 512×416 at 0.5 mm) to keep studies small; `photometric`
    may be MONOCHROME1, in which case stored values are inverted (dense tissue is dark).
    `noise_sigma` is the white detector noise; `tissue_level` replaces the glandular texture
    by flat tissue at that value (e.g. 900: masses on pure detector noise, the hardest case
    for false positives); `mass_diameter_mm` is the (min, max) of the mass diameters.
    """
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}")
    rng = np.random.default_rng(seed)
    uids = UidFactory("mammo", seed)
    ident = make_identity(rng, uids, sex="F")
    series_uid = uids("series", 1)
    count = 0 if negative else (int(rng.integers(0, 3)) if masses is None else masses)
    mass_views = [VIEWS[int(i)] for i in rng.choice(len(VIEWS), size=count, replace=count > 4)]

    files: list[str] = []
    lesions: list[Lesion] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (laterality, view) in enumerate(VIEWS):
        sop_uid = uids("sop", laterality, view)
        inside, radial = _breast_mask(rows, cols, laterality, view)
        if tissue_level is None:
            glands = smooth_noise(rng, (rows, cols), sigma_px=6.0 / pixel_spacing_mm)
            tissue = FAT + GLAND_AMPLITUDE * glands + 250.0 * (1 - radial) ** 0.5
        else:
            tissue = np.full((rows, cols), float(tissue_level))
        image = np.where(inside, tissue, BACKGROUND)
        for mass_index, mass_view in enumerate(mass_views):
            if mass_view != (laterality, view):
                continue
            diameter = float(rng.uniform(*mass_diameter_mm))
            radius_px = diameter / 2 / pixel_spacing_mm
            while True:  # centre well inside the breast, away from the skin line
                cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
                iy, ix = int(cy), int(cx)
                depth = ix if laterality == "L" else cols - 1 - ix
                if (
                    inside[iy, ix]
                    and radial[iy, ix] < 0.8 - radius_px / cols
                    and (depth > radius_px + 10)
                ):
                    break
            yy, xx = np.mgrid[0:rows, 0:cols]
            dist = np.hypot(yy - cy, xx - cx) / radius_px
            image = image + MASS_CONTRAST * np.clip(1.0 - dist**4, 0.0, 1.0)
            lesions.append(
                Lesion(
                    lesion_id=f"mass-{mass_index + 1}",
                    series_instance_uid=series_uid,
                    sop_instance_uid=sop_uid,
                    center_voxel=[float(cx), float(cy), 0.0],
                    center_mm=None,
                    diameter_mm=round(diameter, 3),
                    volume_ml=round(math.pi / 6 * diameter**3 / 1000.0, 5),
                    view=f"{laterality} {view}",
                    laterality=laterality,
                    view_position=view,
                )
            )
        image = image + rng.normal(0.0, noise_sigma, size=image.shape)
        stored = np.clip(np.round(image), 0, MAX_VALUE)
        if photometric == "MONOCHROME1":
            stored = MAX_VALUE - stored

        ds = base_dataset(ident, MG_FOR_PRESENTATION, sop_uid, "MG", series_uid, 1, index + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BodyPartExamined = "BREAST"
        ds.StudyDescription = "MAMMOGRAPHY SCREENING BILATERAL"
        ds.SeriesDescription = "Synthetic screening mammogram"
        ds.ImageLaterality = laterality
        ds.ViewPosition = view
        ds.ViewCodeSequence = [_view_code(view)]
        ds.PatientOrientation = _ORIENTATION[(laterality, view)]
        ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.DetectorType = "DIRECT"
        ds.BurnedInAnnotation = "NO"
        ds.PhotometricInterpretation = photometric
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.WindowCenter = 2048
        ds.WindowWidth = 4096
        ds.VOILUTFunction = "LINEAR"
        set_pixels(ds, stored, bits_stored=12, signed=False)
        name = f"MG_{laterality}{view}.dcm"
        save(ds, out_dir / name)
        files.append(name)

    return GroundTruth(
        kind="mammo",
        seed=seed,
        study_instance_uid=ident.study_instance_uid,
        accession_number=ident.accession_number,
        patient_id=ident.patient_id,
        series_instance_uids=[series_uid],
        negative_control=count == 0,
        files=files,
        lesions=lesions,
        options={
            "rows": rows,
            "cols": cols,
            "pixel_spacing_mm": pixel_spacing_mm,
            "photometric": photometric,
            "noise_sigma": noise_sigma,
            "tissue_level": tissue_level,
            "mass_diameter_mm": list(mass_diameter_mm),
        },
    )
