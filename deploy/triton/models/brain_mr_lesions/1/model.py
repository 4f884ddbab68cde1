"""Reference brain MR hyperintense-lesion segmenter (Triton python backend). NOT a clinical model.

A deterministic image-processing algorithm whose purpose is to exercise the serving path with
a voxel-mask output. It finds the head per slice (above a fifth of the 99th percentile, holes
filled), erodes it by 12 mm in 3-D to drop scalp and skull, estimates brain intensity
(median) and spread (MAD) there, marks voxels brighter than median + 6 × spread, and keeps
6-connected components of at least MIN_VOLUME_ML. It knows nothing of sequences or anatomy.

Inputs: VOLUME FP32 [Z, Y, X], SPACING FP32 [3] (slice, row, column mm).
Outputs: MASK UINT8 [Z, Y, X] (1 = lesion).
Runs the same on KIND_CPU and KIND_GPU instances (the arithmetic is numpy on the host).
"""

from __future__ import annotations

import json

import numpy as np
from _labelling import label

try:  # only importable inside Triton's python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests import the algorithm directly
    pb_utils = None

HEAD_FRACTION, SKULL_MM, SPREAD_K, MIN_VOLUME_ML = 0.2, 12.0, 6.0, 0.02


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Per slice: pixels with the mask somewhere left, right, above and below them."""
    filled = np.ones_like(mask)
    for axis in (1, 2):
        filled &= np.maximum.accumulate(mask, axis=axis)
        filled &= np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return filled


def _erode(mask: np.ndarray, reach: tuple[int, int, int]) -> np.ndarray:
    """Box erosion: True where every voxel within `reach` (z, y, x) is True (outside = False)."""
    table = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.int64)
    table[1:, 1:, 1:] = mask.cumsum(0).cumsum(1).cumsum(2)
    lo = [np.clip(np.arange(n) - r, 0, n) for n, r in zip(mask.shape, reach, strict=True)]
    hi = [np.clip(np.arange(n) + r + 1, 0, n) for n, r in zip(mask.shape, reach, strict=True)]
    total = np.zeros(mask.shape, dtype=np.int64)
    for corner in range(8):
        picks = [hi[a] if corner >> a & 1 else lo[a] for a in range(3)]
        sign = (-1) ** (3 - sum(corner >> a & 1 for a in range(3)))
        total += sign * table[np.ix_(*picks)]
    full = np.prod([2 * r + 1 for r in reach])
    return total >= full


def segment_lesions(volume: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """uint8 [Z, Y, X] lesion mask of hyperintense blobs inside the brain."""
    volume = np.asarray(volume, dtype=np.float32)
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    head = _fill_slices(volume > HEAD_FRACTION * float(np.percentile(volume, 99)))
    reach = tuple(
        max(1, int(np.ceil(SKULL_MM / s))) if volume.shape[i] > 1 else 0
        for i, s in enumerate(spacing)
    )
    brain = _erode(head, reach)
    if brain.sum() < 100:
        return mask
    values = volume[brain]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) or float(values.std()) or 1.0
    bright = brain & (volume > median + SPREAD_K * spread)
    labels, count = label(bright, connectivity=1)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    keep = sizes * voxel_ml >= MIN_VOLUME_ML
    keep[0] = False
    mask[keep[labels]] = 1
    return mask


class TritonPythonModel:
    """Triton glue: validate the inputs, run segment_lesions, return MASK."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        major = int(np.__version__.split(".")[0])
        if major >= 2 and params.get("allow_numpy2", "false").lower() != "true":
            raise RuntimeError(
                f"numpy {np.__version__} in the python backend: Triton 2.51's stub returns empty "
                "outputs with numpy 2; run tritonserver with numpy<2 (see deploy/triton/README.md)"
            )

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                volume = pb_utils.get_input_tensor_by_name(request, "VOLUME").as_numpy()
                spacing = pb_utils.get_input_tensor_by_name(request, "SPACING").as_numpy()
                if volume.ndim != 3 or 0 in volume.shape:
                    raise ValueError(f"VOLUME must be a non-empty [Z, Y, X], got {volume.shape}")
                if spacing.shape != (3,) or not (np.isfinite(spacing) & (spacing > 0)).all():
                    raise ValueError("SPACING must be 3 positive finite numbers")
                mask = segment_lesions(volume, spacing)
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("MASK", mask)])
                )
            except Exception as exc:  # one bad request must not fail the others
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"brain_mr_lesions: {exc}")
                    )
                )
        return responses
