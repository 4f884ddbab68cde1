"""WADO-RS rendered resources: one frame windowed, scaled to a viewport, as JPEG or PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from io import BytesIO

import numpy as np
import pydicom
from PIL import Image

from sidecar_core.errors import FailedPrecondition, InvalidArgument, NotFound
from sidecar_core.pixels import PixelPipelineError, Window, decode_image
from sidecar_core.pixels.display import display_frame, window_for
from sidecar_core.pixels.png import encode_png

MEDIA_TYPES = ("image/jpeg", "image/png")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: tuple[int, int] | None = None  # (width, height) to fit into
    quality: int = 90


def options(media_type: str, window: tuple[float, float, str] | None,
            viewport: tuple[int, int] | None, quality: int) -> RenderOptions:
    """Validated options; InvalidArgument naming what is wrong."""
    media_type = media_type or "image/jpeg"
    if media_type not in MEDIA_TYPES:
        raise InvalidArgument("UNSUPPORTED_MEDIA_TYPE", f"rendered media types are {MEDIA_TYPES}")
    chosen = None
    if window is not None:
        center, width, function = window
        try:
            chosen = Window(center, width, (function or "LINEAR").upper().replace("-", "_"))
        except PixelPipelineError as exc:
            raise InvalidArgument("INVALID_WINDOW", str(exc)) from exc
    if viewport is not None and (min(viewport) < 1 or max(viewport) > 4096):
        raise InvalidArgument("INVALID_VIEWPORT", "viewport must be 1..4096 pixels each way")
    if not 0 <= quality <= 100:
        raise InvalidArgument("INVALID_QUALITY", "quality must be 1..100")
    return RenderOptions(media_type, chosen, viewport, quality or 90)


def render(data: bytes, frame_number: int, opts: RenderOptions) -> bytes:
    """The frame (1-based) of a stored object rendered as `opts` asks."""
    ds = pydicom.dcmread(BytesIO(data), force=True)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise FailedPrecondition("NO_PIXEL_DATA", "the instance has no pixel data to render")
    try:
        image = decode_image(ds)
        window = opts.window if opts.window is not None else window_for(image)
    except PixelPipelineError as exc:
        raise FailedPrecondition("CANNOT_RENDER", f"cannot render this instance: {exc}") from exc
    if not 1 <= frame_number <= image.n_frames:
        raise NotFound("FRAME_NOT_FOUND",
                       f"frame {frame_number} is out of range 1..{image.n_frames}")
    frame = image.frames[frame_number - 1]
    if opts.viewport is not None:
        frame = _fit(frame, opts.viewport, image.pixel_aspect)
    if image.is_color:
        window = None
    pixels = display_frame(frame, window, invert=image.display_inverted)
    if opts.media_type == "image/png":
        return encode_png(pixels, compress_level=3)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=opts.quality)
    return out.getvalue()


def _fit(frame: np.ndarray, viewport: tuple[int, int], aspect: float) -> np.ndarray:
    """The frame resampled to fit the viewport (physical proportions kept), before the VOI so
    that a thumbnail windows few pixels."""
    rows, cols = frame.shape[0], frame.shape[1]
    height = rows * aspect
    scale = min(viewport[0] / cols, viewport[1] / height)
    target = (max(1, round(cols * scale)), max(1, round(height * scale)))
    if target == (cols, rows):
        return frame
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    if frame.ndim == 3:
        return np.asarray(Image.fromarray(frame).resize(target, method))
    resized = Image.fromarray(np.ascontiguousarray(frame, dtype=np.float32), mode="F")
    return np.asarray(resized.resize(target, method))
