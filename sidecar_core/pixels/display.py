"""Turns decoded frames into 8-bit display pixels: VOI choice, VOI LUT, inversion, resizing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from sidecar_core.pixels.decode import DecodedImage
from sidecar_core.pixels.voi_lut import VoiLut, apply_voi_lut
from sidecar_core.pixels.windowing import (
    DICOM_PRESET,
    Window,
    apply_window,
    default_preset,
    resolve_window,
)

Voi = Window | VoiLut  # a VOI transformation: a window (C.11.2.1.2) or a table (C.11.2.1.1)


def window_for(image: DecodedImage, preset: str | None = None) -> Voi | None:
    """The VOI a preset means for this image (None for colour images, shown as stored).

    ``dicom`` is the file's first window, else its VOI LUT table. ``auto`` is computed over
    all frames so that every slice of a series shares one window.
    """
    if image.is_color:
        return None
    name = preset or default_preset(image.modality, image.has_dicom_window)
    if name == DICOM_PRESET and not image.dicom_windows and image.voi_lut is not None:
        return image.voi_lut
    return resolve_window(name, values=image.frames, dicom_windows=image.dicom_windows)


def display_frame(frame: np.ndarray, window: Voi | None, *, invert: bool = False) -> np.ndarray:
    """uint8 display pixels of one frame: grey ``[Y, X]`` through the VOI (then inverted when
    ``invert``), or RGB ``[Y, X, 3]`` as is."""
    if frame.ndim == 3:
        return np.asarray(frame, dtype=np.uint8)
    if window is None:
        raise ValueError("a monochrome frame needs a window")
    if isinstance(window, VoiLut):
        return apply_voi_lut(frame, window, invert=invert)
    return apply_window(frame, window, invert=invert)


def display_frames(
    image: DecodedImage, window: Voi | None, indices: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Display pixels of the chosen frames (all by default), inverted as the image asks
    (MONOCHROME1 or Presentation LUT Shape INVERSE)."""
    chosen = range(image.n_frames) if indices is None else indices
    return [display_frame(image.frames[i], window, invert=image.display_inverted) for i in chosen]


def fit_size(rows: int, columns: int, size: int, aspect: float = 1.0) -> tuple[int, int]:
    """(width, height) with the longer physical side equal to ``size``, square output pixels.

    ``aspect`` is the physical height / width of one input pixel (row spacing / column
    spacing): 64 rows x 128 columns at 1.0 x 0.5 mm is 64 mm square and fits as size x size.
    """
    height = rows * aspect
    scale = size / max(height, columns)
    return max(1, round(columns * scale)), max(1, round(height * scale))


def resize(pixels: np.ndarray, size: int, aspect: float = 1.0) -> Image.Image:
    """A PIL image of the display pixels scaled so its longer physical side is ``size``.

    Non-square pixels (``aspect`` != 1) are resampled to square ones, so the picture has the
    proportions of the anatomy rather than of the pixel matrix.
    """
    picture = Image.fromarray(pixels)
    target = fit_size(pixels.shape[0], pixels.shape[1], size, aspect)
    if target == picture.size:
        return picture
    return picture.resize(target, Image.Resampling.BILINEAR)


def sample_indices(count: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` evenly spaced indices over ``count`` frames, first and last kept."""
    if count <= max_frames:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, max_frames)})
