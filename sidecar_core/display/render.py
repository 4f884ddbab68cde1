"""Renders derived display assets as bytes: thumbnail, viewport PNGs, GIF preview, overlays."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sidecar_core.pixels.decode import DecodedImage
from sidecar_core.pixels.display import (
    Voi,
    display_frame,
    display_frames,
    resize,
    sample_indices,
    window_for,
)
from sidecar_core.pixels.overlay import MASK_COLOR, as_rgb, blend, overlay_layer, unpremultiply
from sidecar_core.pixels.png import encode_png
from sidecar_core.pixels.voi_lut import VoiLut
from sidecar_core.pixels.windowing import Window, presets_for, resolve_window

__all__ = [
    "Box",
    "overlay_png",
    "presets_for",
    "preview_gif",
    "thumbnail_png",
    "viewport_png",
    "viewport_pngs",
]

PNG_CONTENT_TYPE = "image/png"
GIF_CONTENT_TYPE = "image/gif"
BOX_COLOR = (255, 215, 0)
Box = tuple[float, float, float, float, str | None]  # x_min, y_min, x_max, y_max, label


def thumbnail_png(
    image: DecodedImage, size: int = 256, *, preset: str | None = None, index: int | None = None
) -> bytes:
    """PNG of the key slice (the middle of the ordered stack unless ``index``), longer side
    ``size``, in the modality's default window unless ``preset`` names one.

    Non-square pixels are resampled to square ones (``image.pixel_aspect``), so the thumbnail
    has the physical proportions of the image."""
    key = (image.n_frames - 1) // 2 if index is None else index
    window = window_for(image, preset)
    pixels = display_frame(image.frames[key], window, invert=image.display_inverted)
    return encode_png(np.asarray(resize(pixels, size, image.pixel_aspect)), compress_level=6)


def viewport_png(
    frame: np.ndarray,
    window: Voi | str | None,
    *,
    invert: bool = False,
    compress_level: int = 1,
) -> bytes:
    """Full-resolution PNG of one frame: physical values through ``window`` (a Window or a
    VOI LUT table; grey, inverted after the VOI when ``invert``), or uint8 RGB as is
    (``window`` ignored).

    ``window`` may be a preset name; ``auto`` then uses this frame's percentiles and ``dicom``
    raises WindowUnavailable (a bare frame carries no file window: resolve it with
    ``window_for(image, "dicom")`` and pass the result).

    The PNG keeps the stored pixel grid even when pixels are not square: overlays draw finding
    boxes (pixel columns/rows) and masks (``[Y, X]`` of the stored grid) straight onto it.
    """
    if isinstance(window, str) and frame.ndim == 2:
        window = resolve_window(window, values=frame)
    chosen = window if isinstance(window, Window | VoiLut) else None
    return encode_png(display_frame(frame, chosen, invert=invert), compress_level=compress_level)


def viewport_pngs(image: DecodedImage, preset: str, *, compress_level: int = 1) -> list[bytes]:
    """One viewport PNG per frame for a preset; one window for all frames of the stack."""
    window = window_for(image, preset)
    return [
        viewport_png(frame, window, invert=image.display_inverted, compress_level=compress_level)
        for frame in image.frames
    ]


def preview_gif(
    image: DecodedImage,
    preset: str | None = None,
    max_frames: int = 64,
    size: int = 256,
    *,
    frame_ms: int = 80,
) -> bytes:
    """Animated GIF looping through up to ``max_frames`` evenly spaced slices or frames,
    longer physical side ``size`` with square pixels, as the thumbnail."""
    window = window_for(image, preset)
    indices = sample_indices(image.n_frames, max_frames)
    pictures = [
        resize(pixels, size, image.pixel_aspect)
        for pixels in display_frames(image, window, indices)
    ]
    if image.is_color:
        pictures = [p.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for p in pictures]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=frame_ms,
        loop=0,
        optimize=False,
        disposal=1,
    )
    return buffer.getvalue()


def overlay_png(
    base: np.ndarray,
    boxes: Sequence[Box] = (),
    mask: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    *,
    layer_only: bool = False,
    box_color: tuple[int, int, int] = BOX_COLOR,
    mask_color: tuple[int, int, int] = MASK_COLOR,
    mask_alpha: float = 0.35,
    heatmap_alpha: float = 0.5,
) -> bytes:
    """Findings drawn on a viewport image (uint8 grey ``[Y, X]`` or RGB ``[Y, X, 3]``).

    ``boxes`` are ``(x_min, y_min, x_max, y_max, label)`` in pixel columns/rows, inclusive;
    ``mask`` a 2-D bool/uint8 array (non-zero = inside) filled semi-transparently with an
    opaque contour; ``heatmap`` 2-D floats in 0..1 colour-mapped with value-proportional
    opacity. Returns an RGB PNG, or with ``layer_only`` an RGBA PNG of the overlay alone
    (transparent elsewhere) for a viewer that toggles overlays over the viewport image.
    """
    rgb = as_rgb(base)
    shape = (rgb.shape[0], rgb.shape[1])
    color, alpha = overlay_layer(
        shape,
        mask=mask,
        heatmap=heatmap,
        mask_color=mask_color,
        mask_alpha=mask_alpha,
        heatmap_alpha=heatmap_alpha,
    )
    pixels = unpremultiply(color, alpha) if layer_only else blend(rgb, color, alpha)
    if boxes:
        picture = Image.fromarray(pixels)
        _draw_boxes(picture, boxes, box_color)
        pixels = np.asarray(picture)
    return encode_png(pixels, compress_level=3)


def _draw_boxes(picture: Image.Image, boxes: Sequence[Box], color: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    line = max(1, round(max(width, height) / 256))
    font = ImageFont.load_default()
    ink = (*color, 255) if picture.mode == "RGBA" else color
    for x0, y0, x1, y1, label in boxes:
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"box ({x0}, {y0}, {x1}, {y1}) is not finite")
        left, right = sorted((round(x0), round(x1)))
        top, bottom = sorted((round(y0), round(y1)))
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, width - 1), min(bottom, height - 1)
        if left > right or top > bottom:
            continue  # entirely outside the image
        draw.rectangle((left, top, right, bottom), outline=ink, width=line)
        if label:
            text_box = draw.textbbox((0, 0), label, font=font)
            text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
            ty = top - text_h - 4 if top - text_h - 4 >= 0 else min(bottom + 2, height - text_h)
            tx = min(left, max(0, width - text_w - 4))
            background = (0, 0, 0, 200) if picture.mode == "RGBA" else (0, 0, 0)
            draw.rectangle((tx, ty, tx + text_w + 3, ty + text_h + 3), fill=background)
            draw.text((tx + 2 - text_box[0], ty + 2 - text_box[1]), label, fill=ink, font=font)
