"""Reads a synthetic study back into model-ready input arrays (docs/model-input.md, format v1).

A small, independent reader for tests and the accuracy bench; production preprocessing lives
in the asset workers. Slices of a 3-D series are ordered along the slice normal, never by
InstanceNumber or file order; projection images (MG) keep InstanceNumber order.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

FORMAT = "sidecar.model_input.v1"
PROJECTION_MODALITIES = {"MG", "CR", "DX"}


def _floats(ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or len(value) != count:
        return np.full(count, np.nan)
    return np.array([float(v) for v in value], dtype=np.float64)


def read_series(paths: list[Path]) -> dict[str, np.ndarray]:
    """Model-input arrays for the DICOM files of one series."""
    datasets = [pydicom.dcmread(p) for p in paths]
    modality = str(datasets[0].Modality)
    orientation = _floats(datasets[0], "ImageOrientationPatient", 6)
    if modality in PROJECTION_MODALITIES or np.isnan(orientation).any():
        datasets.sort(key=lambda ds: int(ds.get("InstanceNumber") or 0))
        along = np.full(len(datasets), np.nan)
    else:
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.array([_floats(ds, "ImagePositionPatient", 3) @ normal for ds in datasets])
        order = np.argsort(along, kind="stable")
        datasets = [datasets[i] for i in order]
        along = along[order]
    spacing = _floats(datasets[0], "PixelSpacing", 2)
    if np.isnan(spacing).any():
        spacing = _floats(datasets[0], "ImagerPixelSpacing", 2)
    steps = np.diff(along)
    return {
        "format": np.array(FORMAT),
        "volume": np.stack(
            [apply_modality_lut(ds.pixel_array, ds).astype(np.float32) for ds in datasets]
        ),
        "positions": np.stack([_floats(ds, "ImagePositionPatient", 3) for ds in datasets]),
        "orientation": orientation,
        "pixel_spacing": spacing,
        "slice_spacing": np.array(float(np.median(steps)) if steps.size else np.nan),
        "sop_instance_uids": np.array([str(ds.SOPInstanceUID) for ds in datasets]),
        "frames": np.ones(len(datasets), dtype=np.int32),
        "modality": np.array(modality),
        "laterality": np.array(
            [str(ds.get("ImageLaterality") or ds.get("Laterality") or "") for ds in datasets]
        ),
        "view_position": np.array([str(ds.get("ViewPosition") or "") for ds in datasets]),
    }


def read_study(study_dir: str | Path) -> dict[str, np.ndarray]:
    """Model-input arrays of a single-series synthetic study directory."""
    return read_series(sorted(Path(study_dir).glob("*.dcm")))


def to_npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as the compressed .npz bytes the object store holds."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
