"""Composites finding masks and heatmaps onto 8-bit display images (pure numpy, no I/O)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

RGB = tuple[int, int, int]

# The classic "jet" ramp (dark blue -> cyan -> yellow -> dark red) readers know from saliency maps.
HEATMAP_ANCHORS: tuple[tuple[float, RGB], ...] = (
    (0.0, (0, 0, 131)),
    (0.125, (0, 60, 170)),
    (0.375, (5, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (250, 0, 0)),
    (1.0, (128, 0, 0)),
)
MASK_COLOR: RGB = (0, 255, 128)


@lru_cache(maxsize=1)
def heatmap_lut() -> np.ndarray:
    """uint8 ``[256, 3]`` colour ramp indexed by ``round(value * 255)``."""
    stops = np.array([a[0] for a in HEATMAP_ANCHORS])
    colors = np.array([a[1] for a in HEATMAP_ANCHORS], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, stops, colors[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def as_rgb(base: np.ndarray) -> np.ndarray:
    """uint8 ``[Y, X, 3]`` from grey ``[Y, X]`` or RGB ``[Y, X, 3]`` display pixels."""
    if base.dtype != np.uint8:
        raise TypeError(f"overlay base must be uint8 display pixels, got {base.dtype}")
    if base.ndim == 2:
        return np.repeat(base[:, :, None], 3, axis=2)
    if base.ndim == 3 and base.shape[2] == 3:
        return base
    raise ValueError(f"overlay base of shape {base.shape} is neither grey nor RGB")


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside the mask (its one-pixel boundary)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def overlay_layer(
    shape: tuple[int, int],
    *,
    mask: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    mask_color: RGB = MASK_COLOR,
    mask_alpha: float = 0.35,
    heatmap_alpha: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied colour ``[Y, X, 3]`` and alpha ``[Y, X]`` (float32) of heatmap then mask.

    The heatmap's opacity grows with its value (0 is transparent); the mask is filled at
    ``mask_alpha`` with an opaque one-pixel contour so its edge stays visible.
    """
    color = np.zeros((*shape, 3), dtype=np.float32)
    alpha = np.zeros(shape, dtype=np.float32)
    if heatmap is not None:
        values = _checked(heatmap, shape, "heatmap").astype(np.float32)
        values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
        rgb = heatmap_lut()[np.round(values * 255).astype(np.uint8)].astype(np.float32)
        _over(color, alpha, rgb, values * np.float32(heatmap_alpha))
    if mask is not None:
        inside = _checked(mask, shape, "mask").astype(bool)
        fill = np.broadcast_to(np.array(mask_color, dtype=np.float32), (*shape, 3))
        _over(color, alpha, fill, inside * np.float32(mask_alpha))
        _over(color, alpha, fill, mask_contour(inside).astype(np.float32))
    return color, alpha


def blend(base_rgb: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGB of a premultiplied layer composited over the base."""
    out = color + base_rgb.astype(np.float32) * (1.0 - alpha)[:, :, None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def unpremultiply(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGBA of a premultiplied layer, for a transparent overlay image."""
    safe = np.where(alpha > 0, alpha, 1.0)[:, :, None]
    rgba = np.concatenate([color / safe, alpha[:, :, None] * 255.0], axis=2)
    return np.clip(rgba + 0.5, 0, 255).astype(np.uint8)


def _over(color: np.ndarray, alpha: np.ndarray, rgb: np.ndarray, a: np.ndarray) -> None:
    """Porter-Duff ``layer over accumulated`` in place (premultiplied colour)."""
    keep = 1.0 - a
    color *= keep[:, :, None]
    color += rgb * a[:, :, None]
    alpha *= keep
    alpha += a


def _checked(values: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != shape:
        raise ValueError(f"{name} of shape {array.shape} does not match the image {shape}")
    return array
