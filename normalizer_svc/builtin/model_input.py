"""ModelInput: the model-ready input (docs/model-input.md, format v1) loaded from its .npz bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sidecar_core.model_input import check_arrays, read_arrays


class ModelInputLike(Protocol):
    volume: np.ndarray
    positions: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    slice_spacing: float
    sop_instance_uids: np.ndarray
    frames: np.ndarray
    modality: str
    laterality: np.ndarray
    view_position: np.ndarray


@dataclass
class ModelInput:
    """One series' model-ready input; see docs/model-input.md for every field."""

    volume: np.ndarray  # float32 [Z, Y, X]
    positions: np.ndarray  # float64 [Z, 3]
    orientation: np.ndarray  # float64 [6]
    pixel_spacing: np.ndarray  # float64 [2] (row, column)
    slice_spacing: float
    sop_instance_uids: np.ndarray  # str [Z]
    frames: np.ndarray  # int32 [Z]
    modality: str
    laterality: np.ndarray  # str [Z]
    view_position: np.ndarray  # str [Z]

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ModelInput:
        """Builds from the archive's arrays; raises ValueError on a wrong format or shape."""
        check_arrays(arrays)
        volume = np.asarray(arrays["volume"], dtype=np.float32)
        if not volume.flags.writeable:  # a float32 archive's view: the caller owns a copy
            volume = volume.copy()
        if volume.ndim != 3 or 0 in volume.shape:
            raise ValueError(f"volume must be a non-empty [Z, Y, X] array, not {volume.shape}")
        z = volume.shape[0]
        result = cls(
            volume=volume,
            positions=np.asarray(arrays["positions"], dtype=np.float64).reshape(z, 3),
            orientation=np.asarray(arrays["orientation"], dtype=np.float64).reshape(6),
            pixel_spacing=np.asarray(arrays["pixel_spacing"], dtype=np.float64).reshape(2),
            slice_spacing=float(arrays["slice_spacing"]),
            sop_instance_uids=np.asarray(arrays["sop_instance_uids"]).astype(str).reshape(z),
            frames=np.asarray(arrays["frames"], dtype=np.int32).reshape(z),
            modality=str(arrays["modality"]),
            laterality=np.asarray(arrays["laterality"]).astype(str).reshape(z),
            view_position=np.asarray(arrays["view_position"]).astype(str).reshape(z),
        )
        return result

    @classmethod
    def from_npz(cls, data: bytes) -> ModelInput:
        """Loads the .npz bytes written by preprocessing (no pickles are allowed)."""
        return cls.from_arrays(read_arrays(data))

    @property
    def spacing_zyx(self) -> np.ndarray:
        """(slice, row, column) spacing in mm as float32, the models' SPACING input."""
        slice_mm = self.slice_spacing if np.isfinite(self.slice_spacing) else 1.0
        return np.array([slice_mm, *self.pixel_spacing], dtype=np.float32)
