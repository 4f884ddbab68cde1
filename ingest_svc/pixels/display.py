"""Turns decoded frames into 8-bit display pixels: window choice, VOI LUT, MONOCHROME1, resizing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ingest_svc.pixels.decode import DecodedImage
from ingest_svc.pixels.windowing import Window, apply_window, default_preset, resolve_window


def window_for(image: DecodedImage, preset: str | None = None) -> Window | None:
    """The Window a preset means for this image (None for colour images, shown as stored).

    ``auto`` is computed over all frames so that every slice of a series shares one window.
    """
    if image.is_color:
        return None
    name = preset or default_preset(image.modality, image.has_dicom_window)
    return resolve_window(name, values=image.frames, dicom_windows=image.dicom_windows)


def display_frame(frame: np.ndarray, window: Window | None, *, invert: bool = False) -> np.ndarray:
    """uint8 display pixels of one frame: windowed grey ``[Y, X]`` or RGB ``[Y, X, 3]`` as is."""
    if frame.ndim == 3:
        return np.asarray(frame, dtype=np.uint8)
    if window is None:
        raise ValueError("a monochrome frame needs a window")
    return apply_window(frame, window, invert=invert)


def display_frames(
    image: DecodedImage, window: Window | None, indices: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Display pixels of the chosen frames (all by default); MONOCHROME1 comes out inverted."""
    chosen = range(image.n_frames) if indices is None else indices
    return [display_frame(image.frames[i], window, invert=image.is_monochrome1) for i in chosen]


def fit_size(rows: int, columns: int, size: int) -> tuple[int, int]:
    """(width, height) with the longer side equal to ``size`` and the aspect ratio kept."""
    scale = size / max(rows, columns)
    return max(1, round(columns * scale)), max(1, round(rows * scale))


def resize(pixels: np.ndarray, size: int) -> Image.Image:
    """A PIL image of the display pixels scaled so its longer side is ``size``."""
    picture = Image.fromarray(pixels)
    target = fit_size(pixels.shape[0], pixels.shape[1], size)
    if target == picture.size:
        return picture
    return picture.resize(target, Image.Resampling.BILINEAR)


def sample_indices(count: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` evenly spaced indices over ``count`` frames, first and last kept."""
    if count <= max_frames:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, max_frames)})
