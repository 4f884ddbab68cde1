"""Non-square pixels (PS3.3 C.7.6.3.1.7): thumbnails and previews get square pixels, the
viewport images and the model input keep the stored grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageSequence
from pydicom.dataset import Dataset

from imaging_svc.assets.overlays import SliceMarks, render_overlay
from sidecar_core.display.render import preview_gif, thumbnail_png, viewport_pngs
from sidecar_core.pixels import decode_image, decode_series, model_input_from_series
from sidecar_core.pixels.display import fit_size
from sidecar_core.pixels.geometry import pixel_aspect
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, reread

# Every dataset here is built in the test with pydicom (test_pixels_support, imported above).


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _quadrants(rows: int = 64, columns: int = 128, frames: int = 1) -> np.ndarray:
    """Stored 0 / 1000 on the top half, 2000 / 3000 on the bottom half (left / right)."""
    stored = np.zeros((frames, rows, columns), np.uint16)
    stored[:, : rows // 2, columns // 2 :] = 1000
    stored[:, rows // 2 :, : columns // 2] = 2000
    stored[:, rows // 2 :, columns // 2 :] = 3000
    return stored


def _image(
    spacing: tuple[float, float] | None, rows: int = 64, columns: int = 128, **extra: object
) -> Dataset:
    ds = make_image(_quadrants(rows, columns), bits_stored=12, modality="MR", spacing=spacing)
    ds.WindowCenter, ds.WindowWidth = 1500, 3001  # 0 -> 0, 1000 -> 85, 2000 -> 170, 3000 -> 255
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return reread(ds)


def _assert_quadrants(shown: np.ndarray) -> None:
    """Each quadrant's interior (2 pixels from the seams) holds its own windowed value."""
    h, w = shown.shape[0] // 2, shown.shape[1] // 2
    quads = {
        (0, 0): shown[: h - 2, : w - 2],
        (0, 1): shown[: h - 2, w + 2 :],
        (1, 0): shown[h + 2 :, : w - 2],
        (1, 1): shown[h + 2 :, w + 2 :],
    }
    expected = {(0, 0): 0, (0, 1): 85, (1, 0): 170, (1, 1): 255}
    for key, quad in quads.items():
        assert quad.min() == quad.max() == expected[key], key


def test_64_by_128_at_1_by_half_mm_gives_a_square_thumbnail() -> None:
    image = decode_image(_image((1.0, 0.5)))
    assert image.pixel_aspect == 2.0 and image.frames.shape == (1, 64, 128)
    thumb = _pixels(thumbnail_png(image, size=64))
    assert thumb.shape == (64, 64)  # 64 mm x 64 mm; the pixel matrix alone would give 32 x 64
    _assert_quadrants(thumb)


@pytest.mark.parametrize(
    ("spacing", "rows", "columns", "shape"),
    [
        ((0.5, 1.0), 128, 64, (64, 64)),  # rows are the dense axis: 64 mm x 64 mm
        ((1.0, 0.5), 64, 64, (64, 32)),  # 64 mm tall, 32 mm wide
        ((0.7, 0.7), 64, 128, (32, 64)),  # square pixels: as before
        ((0.5, 1.0), 64, 64, (32, 64)),
    ],
)
def test_thumbnail_shape_follows_the_physical_extent(
    spacing: tuple[float, float], rows: int, columns: int, shape: tuple[int, int]
) -> None:
    thumb = _pixels(thumbnail_png(decode_image(_image(spacing, rows, columns)), size=64))
    assert thumb.shape == shape
    _assert_quadrants(thumb)


def test_aspect_sources_in_order_of_precedence() -> None:
    ds = Dataset()
    assert pixel_aspect(ds) == 1.0
    ds.PixelAspectRatio = [4, 3]  # vertical, horizontal
    assert pixel_aspect(ds) == pytest.approx(4 / 3)
    ds.NominalScannedPixelSpacing = [0.3, 0.1]
    assert pixel_aspect(ds) == pytest.approx(3.0)
    ds.ImagerPixelSpacing = [0.2, 0.1]
    assert pixel_aspect(ds) == pytest.approx(2.0)
    ds.PixelSpacing = [0.1, 0.4]
    assert pixel_aspect(ds) == pytest.approx(0.25)
    ds.PixelSpacing = [0.0, 0.4]  # unusable: the next source decides
    assert pixel_aspect(ds) == pytest.approx(2.0)


def test_enhanced_pixel_measures_decide_per_frame() -> None:
    ds = Dataset()
    ds.PixelSpacing = [1.0, 1.0]
    measures = Dataset()
    measures.PixelSpacing = [0.6, 0.3]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    assert pixel_aspect(ds) == pytest.approx(2.0)


def test_imager_spacing_and_aspect_ratio_reach_the_thumbnail() -> None:
    cr = decode_image(_image(None, ImagerPixelSpacing=[0.2, 0.1], Modality="CR"))
    assert _pixels(thumbnail_png(cr, size=64)).shape == (64, 64)
    sc = decode_image(_image(None, PixelAspectRatio=[2, 1]))
    assert _pixels(thumbnail_png(sc, size=64)).shape == (64, 64)


def test_preview_gif_frames_get_square_pixels() -> None:
    ds = make_image(_quadrants(frames=3), bits_stored=12, modality="MR", spacing=(1.0, 0.5))
    ds.WindowCenter, ds.WindowWidth = 1500, 3001
    series = decode_series([reread(ds)])
    gif = Image.open(io.BytesIO(preview_gif(series.image, "dicom", size=64)))
    frames = [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(gif)]
    assert frames and all(f.shape == (64, 64) for f in frames)


def test_viewports_and_model_input_keep_the_stored_grid() -> None:
    series = decode_series([_image((1.0, 0.5))])
    viewport = viewport_pngs(series.image, "dicom")[0]
    assert _pixels(viewport).shape == (64, 128)
    # overlays draw stored-grid coordinates straight onto the viewport image
    mask = np.zeros((64, 128), bool)
    mask[40:50, 100:110] = True
    marks = SliceMarks(boxes=[(10.0, 5.0, 20.0, 15.0, None)], mask=mask)
    drawn = _pixels(render_overlay(viewport, marks))
    assert drawn.shape == (64, 128, 3)
    assert drawn[10, 10].tolist() == [255, 215, 0]  # the box's left edge at column 10
    assert drawn[40, 105].tolist() == [0, 255, 128]  # the mask's contour at row 40
    model = model_input_from_series(series)
    assert model.volume.shape == (1, 64, 128)
    assert model.pixel_spacing.tolist() == [1.0, 0.5]


def test_fit_size() -> None:
    assert fit_size(64, 128, 64, 2.0) == (64, 64)
    assert fit_size(64, 128, 64) == (64, 32)
    assert fit_size(10, 10, 100, 1000.0) == (1, 100)
