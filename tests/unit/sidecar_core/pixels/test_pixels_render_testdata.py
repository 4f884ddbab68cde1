"""pydicom's own test files rendered to display assets: the VOI, polarity and aspect steps hold."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from sidecar_core.display.render import preview_gif, thumbnail_png, viewport_png
from sidecar_core.pixels import PixelDecodeError, decode_image
from sidecar_core.pixels.display import fit_size, window_for
from tests.unit.sidecar_core.pixels import test_pixels_testdata as collection

# Files of pydicom's test collection used by name below (the rest come from the collection).
CT_NON_SQUARE = "dicomdirtests/98892001/CT2N/6924"  # PixelSpacing 0.545455 \ 0.596847, 16 x 16
CR_MONOCHROME1 = "dicomdirtests/77654033/CR1/6154"  # MONOCHROME1, no Presentation LUT Shape
THUMB = 64


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("path", collection._collection(), ids=lambda p: Path(p).name)
def test_every_decodable_file_renders(path: str) -> None:
    try:
        image = decode_image(collection._read(path))
    except PixelDecodeError:
        return  # covered by test_pixels_testdata: a named error, nothing to render
    thumb = _pixels(thumbnail_png(image, size=THUMB))
    width, height = fit_size(image.rows, image.columns, THUMB, image.pixel_aspect)
    assert thumb.shape[:2] == (height, width) and max(thumb.shape[:2]) == THUMB
    viewport = _pixels(viewport_png(image.frames[0], window_for(image)))
    assert viewport.shape[:2] == (image.rows, image.columns)  # the stored grid, always
    if image.n_frames > 1:
        gif = Image.open(io.BytesIO(preview_gif(image, max_frames=4, size=THUMB)))
        assert max(gif.size) == THUMB


def test_non_square_ct_thumbnail_keeps_its_physical_proportions() -> None:
    image = decode_image(collection._read(get_testdata_file(CT_NON_SQUARE)))
    assert image.pixel_aspect == pytest.approx(0.545455 / 0.596847)
    # 16 rows x 0.545 mm = 8.73 mm tall, 16 columns x 0.597 mm = 9.55 mm wide
    assert _pixels(thumbnail_png(image, size=THUMB)).shape == (58, 64)


def test_monochrome1_collection_file_displays_inverted() -> None:
    image = decode_image(collection._read(get_testdata_file(CR_MONOCHROME1)))
    assert image.is_monochrome1 and image.presentation_lut_shape == ""
    assert image.display_inverted
    frame = image.frames[0]
    assert frame.shape == (16, 16)  # a 16-pixel thumbnail is the frame itself, not resampled
    shown = _pixels(thumbnail_png(image, size=16))
    darkest = np.unravel_index(frame.argmin(), frame.shape)
    brightest = np.unravel_index(frame.argmax(), frame.shape)
    assert shown[darkest] > shown[brightest]  # the lowest stored value shows brightest
