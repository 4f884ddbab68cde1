"""Reference mammography mass-candidate detector (Triton python backend). NOT a clinical model.

A deterministic image-processing algorithm whose purpose is to exercise the serving path with
2-D box outputs and an image-level score. Per view it: fixes the polarity (MONOCHROME1 input
is inverted so that dense is bright, judged by the image border being brighter than the
image), finds the breast (above half-way between background and tissue), and scores blobs with
a multi-scale centre-minus-surround box filter (disc radii 4–12 mm) divided by that filter's
robust spread over the breast. Peaks above Z_THRESHOLD become candidates; their box is the
half-maximum region around the peak, kept when that region is 5–32 mm across and the peak z
times the region's circularity (area / circle of its longest side) reaches MIN_EVIDENCE and
the peak's contrast (centre minus surround) is at least MIN_CONTRAST_SIGMAS times the pixel
noise (robust spread of neighbour differences in the breast): on flat tissue the spread of the
filter response is the noise alone, so z-scores there measure noise, not masses.
SUSPICION is the best candidate score (0.02 if none). Thresholds were tuned on synthetic
studies with seeds 1000–1019, not on the accuracy bench's seeds.

Inputs: IMAGE FP32 [Y, X] (one view), SPACING FP32 [2] (row, column mm).
Outputs: BOXES FP32 [N, 4] (x0, y0, x1, y1 inclusive pixels), SCORES FP32 [N], SUSPICION FP32 [1].
max_batch_size is 0: N differs per image (ragged), which the v1 tensor contract has no
padding/count output for; clients send one request per view (they run concurrently).
"""

from __future__ import annotations

import json

import numpy as np
from _labelling import label

try:  # only importable inside Triton's python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # unit tests import the algorithm directly
    pb_utils = None

RADII_MM = (4.0, 6.0, 8.5, 12.0)
Z_THRESHOLD = 3.5  # candidate peaks
MIN_EVIDENCE = 3.4  # peak z × circularity of the half-maximum region
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 5.0, 32.0
SKIN_MARGIN_MM = 6.0
MIN_CONTRAST_SIGMAS = 3.0  # a mass stands out of the detector noise, not just of the filter's
MAX_CANDIDATES = 8
NO_FINDING_SUSPICION = 0.02


def _integral(image: np.ndarray) -> np.ndarray:
    table = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = image.cumsum(axis=0).cumsum(axis=1)
    return table


def _box_sum(table: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2r+1)² box around every pixel, clipped at the image edges."""
    rows, cols = table.shape[0] - 1, table.shape[1] - 1
    y0 = np.clip(np.arange(rows) - radius, 0, rows)
    y1 = np.clip(np.arange(rows) + radius + 1, 0, rows)
    x0 = np.clip(np.arange(cols) - radius, 0, cols)
    x1 = np.clip(np.arange(cols) + radius + 1, 0, cols)
    return (
        table[np.ix_(y1, x1)]
        - table[np.ix_(y0, x1)]
        - table[np.ix_(y1, x0)]
        + table[np.ix_(y0, x0)]
    )


def _robust_sigma(values: np.ndarray) -> float:
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return spread if spread > 1e-6 else float(values.std()) + 1e-6


def _pixel_noise(image: np.ndarray, interior: np.ndarray) -> float:
    """Robust sigma of the white (pixel-to-pixel) noise inside the breast: neighbour differences
    cancel smooth tissue, and their spread is sqrt(2) times the noise."""
    both = interior[:, 1:] & interior[:, :-1]
    if both.sum() < 100:
        return 0.0
    diffs = (image[:, 1:] - image[:, :-1])[both]
    return 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2.0)


def detect_masses(image: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mass boxes [N, 4] (x0, y0, x1, y1), scores [N] (best first) and the image suspicion."""
    image = np.asarray(image, dtype=np.float64)
    pixel_mm = float(np.mean(np.asarray(spacing, dtype=np.float64)))
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if np.median(border) > np.median(image):  # MONOCHROME1: dense tissue is dark
        image = image.max() + image.min() - image
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = float(np.median(border))
    breast = image > background + 0.5 * (float(np.percentile(image, 95)) - background)
    if breast.sum() < 100:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), NO_FINDING_SUSPICION
    weights = _integral(breast.astype(np.float64))
    values = _integral(np.where(breast, image, 0.0))
    margin = max(1, int(round(SKIN_MARGIN_MM / pixel_mm)))
    ones = _integral(np.ones(image.shape))
    interior = _box_sum(weights, margin) >= _box_sum(ones, margin) - 0.5  # image edge is not skin

    min_contrast = MIN_CONTRAST_SIGMAS * _pixel_noise(image, interior)
    best_z = np.full(image.shape, -np.inf)
    best_radius = np.zeros(image.shape, dtype=np.int64)
    best_response = np.zeros(image.shape)
    for radius_mm in RADII_MM:
        r = max(1, int(round(radius_mm / pixel_mm)))
        inner_n = _box_sum(weights, r)
        mid_n, outer_n = _box_sum(weights, int(1.5 * r)), _box_sum(weights, int(2.5 * r))
        inner = _box_sum(values, r) / np.maximum(inner_n, 1)
        ring = (_box_sum(values, int(2.5 * r)) - _box_sum(values, int(1.5 * r))) / np.maximum(
            outer_n - mid_n, 1
        )
        response = np.where(interior, inner - ring, 0.0)
        z = response / _robust_sigma(response[interior])
        better = z > best_z
        best_z[better], best_radius[better] = z[better], r
        best_response[better] = response[better]
    peaks, count = label(interior & (best_z > Z_THRESHOLD), connectivity=2)
    found: list[tuple[float, list[float]]] = []
    for index in range(1, count + 1):
        ys, xs = np.nonzero(peaks == index)
        top = int(np.argmax(best_z[ys, xs]))
        py, px, r = ys[top], xs[top], int(best_radius[ys[top], xs[top]])
        if best_response[py, px] < min_contrast:
            continue  # a noise blob: its contrast is within the detector noise
        window = 3 * r
        y0, y1 = max(0, py - window), min(image.shape[0], py + window + 1)
        x0, x1 = max(0, px - window), min(image.shape[1], px + window + 1)
        patch = image[y0:y1, x0:x1]
        surround = float(np.median(patch[breast[y0:y1, x0:x1]]))
        half = (image[py, px] + surround) / 2
        blobs, _ = label(patch > half, connectivity=1)
        own = blobs == blobs[py - y0, px - x0]
        if blobs[py - y0, px - x0] == 0:
            own = np.zeros_like(own)
            own[max(0, py - y0 - r) : py - y0 + r + 1, max(0, px - x0 - r) : px - x0 + r + 1] = True
        oy, ox = np.nonzero(own)
        height, width = oy.max() - oy.min() + 1, ox.max() - ox.min() + 1
        circularity = float(own.sum() / (np.pi / 4 * max(height, width) ** 2))
        diameter_mm = 2.0 * np.sqrt(own.sum() / np.pi) * pixel_mm
        evidence = float(best_z[py, px]) * circularity
        if not MIN_DIAMETER_MM <= diameter_mm <= MAX_DIAMETER_MM or evidence < MIN_EVIDENCE:
            continue
        score = float(np.clip(0.5 + (evidence - MIN_EVIDENCE) / 6.0, 0.0, 1.0))
        found.append((score, [x0 + ox.min(), y0 + oy.min(), x0 + ox.max(), y0 + oy.max()]))
    found.sort(key=lambda item: -item[0])
    found = found[:MAX_CANDIDATES]
    if not found:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), NO_FINDING_SUSPICION
    boxes = np.array([box for _, box in found], dtype=np.float32)
    scores = np.array([score for score, _ in found], dtype=np.float32)
    return boxes, scores, float(scores.max())


class TritonPythonModel:
    """Triton glue: validate the inputs, run detect_masses, return BOXES, SCORES, SUSPICION."""

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
                image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                spacing = pb_utils.get_input_tensor_by_name(request, "SPACING").as_numpy()
                if image.ndim != 2 or min(image.shape) < 16:
                    raise ValueError(f"IMAGE must be [Y, X] of at least 16×16, got {image.shape}")
                if spacing.shape != (2,) or not (np.isfinite(spacing) & (spacing > 0)).all():
                    raise ValueError("SPACING must be 2 positive finite numbers")
                boxes, scores, suspicion = detect_masses(image, spacing)
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[
                            pb_utils.Tensor("BOXES", boxes),
                            pb_utils.Tensor("SCORES", scores),
                            pb_utils.Tensor("SUSPICION", np.array([suspicion], dtype=np.float32)),
                        ]
                    )
                )
            except Exception as exc:  # one bad request must not fail the others
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"mammo_masses: {exc}")
                    )
                )
        return responses
