"""Reference chest CT nodule-candidate detector (Triton python backend). NOT a clinical model.

A deterministic image-processing algorithm whose purpose is to exercise the serving path with
3-D box outputs. It finds solid (> -300 HU) blobs surrounded by lung (< -400 HU) on all six
sides within 18 mm, labels them (6-connected) and keeps compact, roughly spherical ones of
3–30 mm equivalent diameter. Score = roundness (shortest / longest extent, and how well the blob
fills its box compared with a sphere). It has no notion of anatomy beyond that and has never been
validated on patient data.

Inputs: VOLUME FP32 [Z, Y, X] (HU), SPACING FP32 [3] (slice, row, column mm).
Outputs: BOXES FP32 [N, 6] (z0, y0, x0, z1, y1, x1 inclusive voxel indices), SCORES FP32 [N].
Runs the same on KIND_CPU and KIND_GPU instances (the arithmetic is numpy on the host).
"""

from __future__ import annotations

import json

import numpy as np
from _labelling import bounding_boxes, label

try:  # only importable inside Triton's python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests import the algorithm directly
    pb_utils = None

SOLID_HU, LUNG_HU, SURROUND_MM = -300.0, -400.0, 18.0
MIN_DIAMETER_MM, MAX_DIAMETER_MM, MAX_ELONGATION, MIN_FILL = 3.0, 30.0, 2.0, 0.3
MAX_CANDIDATES = 32


def _along(ndim: int, axis: int, part: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = part
    return tuple(index)


def _lung_within(lung: np.ndarray, axis: int, reach: int) -> np.ndarray:
    """True where a lung voxel lies within `reach` voxels on BOTH sides along `axis`.

    A sliding-window OR of width `reach` built by doubling (log2(reach) boolean passes over the
    volume instead of an int32 cumulative sum and four gathers)."""
    n, ndim = lung.shape[axis], lung.ndim
    pad = [(0, 0)] * ndim
    pad[axis] = (reach, reach)
    window = np.pad(lung, pad)  # window[j] = lung[j - reach], False outside: width 1
    width = 1
    while width < reach:  # afterwards window[j] = any(padded[j : j + reach])
        step = min(width, reach - width)
        m = window.shape[axis]
        window = window[_along(ndim, axis, slice(0, m - step))] | window[
            _along(ndim, axis, slice(step, m))]
        width += step
    behind = window[_along(ndim, axis, slice(0, n))]  # lung[i - reach .. i - 1]
    ahead = window[_along(ndim, axis, slice(reach + 1, reach + 1 + n))]  # lung[i + 1 .. i + reach]
    return behind & ahead


def _inside_body(body: np.ndarray) -> np.ndarray:
    """Per slice: pixels with body tissue somewhere left, right, above and below them
    (between the first and the last body pixel of their row and of their column)."""
    inside = np.ones(body.shape, dtype=bool)
    for axis in range(1, body.ndim):
        n = body.shape[axis]
        first = np.where(body.any(axis=axis), np.argmax(body, axis=axis), n).astype(np.int16)
        last = (n - 1 - np.argmax(np.flip(body, axis=axis), axis=axis)).astype(np.int16)
        shape = [1] * body.ndim
        shape[axis] = n
        index = np.arange(n, dtype=np.int16).reshape(shape)
        inside &= np.expand_dims(first, axis) <= index
        inside &= index <= np.expand_dims(last, axis)
    return inside


def _solid_and_lung(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solid tissue, and lung (low density inside the body), one slice at a time: the
    per-slice arrays stay in the CPU cache (about 2.5x less CPU than whole-volume passes)."""
    solid = np.empty(volume.shape, dtype=bool)
    lung = np.empty(volume.shape, dtype=bool)
    for z in range(volume.shape[0]):
        np.greater(volume[z], SOLID_HU, out=solid[z])
        np.less(volume[z], LUNG_HU, out=lung[z])
        lung[z] &= _inside_body(solid[z][None])[0]
    return solid, lung


def _lung_box(lung: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the lung voxels (a candidate needs lung on both sides along every
    axis, so none lies outside it), or None without lung."""
    plane = lung.any(axis=0)
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if zs.size == 0:
        return None
    return tuple(slice(int(a[0]), int(a[-1]) + 1) for a in (zs, ys, xs))


def detect_nodules(volume: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodule candidate boxes [N, 6] (z0, y0, x0, z1, y1, x1) and scores [N], best first."""
    volume = np.asarray(volume, dtype=np.float32)
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    solid, lung = _solid_and_lung(volume)
    box = _lung_box(lung)
    if box is None:
        return np.zeros((0, 6), np.float32), np.zeros((0,), np.float32)
    lung, candidate = lung[box], solid[box]  # views: no candidate lies outside the lung's box
    for axis in range(3):
        reach = max(1, int(round(SURROUND_MM / spacing[axis])))
        candidate = candidate & _lung_within(lung, axis, reach)
    labels, count = label(candidate, connectivity=1)
    if count == 0:
        return np.zeros((0, 6), np.float32), np.zeros((0,), np.float32)
    boxes = bounding_boxes(labels, count)
    boxes += np.array([part.start for part in box] * 2, dtype=boxes.dtype)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    voxel_mm3 = float(np.prod(spacing))
    kept_boxes, scores = [], []
    for box, size in zip(boxes, sizes, strict=True):
        extent_mm = (box[3:] - box[:3] + 1) * spacing
        diameter = (6.0 * size * voxel_mm3 / np.pi) ** (1 / 3)
        roundness = float(extent_mm.min() / extent_mm.max())
        fill = float(size / np.prod(box[3:] - box[:3] + 1))
        if not MIN_DIAMETER_MM <= diameter <= MAX_DIAMETER_MM:
            continue
        if 1 / roundness > MAX_ELONGATION or fill < MIN_FILL:
            continue
        sphere_fill = 1.0 - min(abs(fill - np.pi / 6) / (np.pi / 6), 1.0)
        kept_boxes.append(box.astype(np.float32))
        scores.append(float(np.clip(0.3 + 0.5 * roundness + 0.2 * sphere_fill, 0.0, 1.0)))
    if not scores:
        return np.zeros((0, 6), np.float32), np.zeros((0,), np.float32)
    order = np.argsort(-np.array(scores), kind="stable")[:MAX_CANDIDATES]
    return (
        np.stack([kept_boxes[i] for i in order]).astype(np.float32),
        np.array([scores[i] for i in order], dtype=np.float32),
    )


class TritonPythonModel:
    """Triton glue: validate the inputs, run detect_nodules, return BOXES and SCORES."""

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
                boxes, scores = detect_nodules(volume, spacing)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("BOXES", boxes),
                            pb_utils.Tensor("SCORES", scores),
                        ]
                    )
                )
            except Exception as exc:  # one bad request must not fail the others
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"chest_ct_nodules: {exc}")
                    )
                )
        return responses
