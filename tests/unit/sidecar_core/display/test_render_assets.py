"""Rendered assets: what a radiologist sees matches the pixels (windows, MONOCHROME1, overlays)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageSequence

from sidecar_core.display.render import (
    overlay_png,
    presets_for,
    preview_gif,
    thumbnail_png,
    viewport_png,
    viewport_pngs,
)
from sidecar_core.pixels import CT_PRESETS, WindowUnavailable, decode_image, decode_series
from sidecar_core.pixels.overlay import MASK_COLOR, heatmap_lut
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, make_series, reread

# Images are built in the tests with pydicom (test_pixels_support, imported above).


def _pixels(png_or_gif: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png_or_gif))
    image.load()
    return np.asarray(image)


def _half_and_half(photometric: str) -> np.ndarray:
    """Decoded frame with stored 100 on the left half and 3000 on the right half."""
    stored = np.full((64, 64), 3000, np.uint16)
    stored[:, :32] = 100
    ds = make_image(stored, photometric=photometric, bits_stored=12, modality="CR")
    ds.WindowCenter, ds.WindowWidth = 1550, 3000
    return reread(ds)


def test_monochrome1_low_values_render_bright() -> None:
    image = decode_image(_half_and_half("MONOCHROME1"))
    for png in (viewport_pngs(image, "dicom")[0], viewport_pngs(image, "auto")[0]):
        shown = _pixels(png)
        assert shown[:, :32].mean() > 240  # low stored values: bright
        assert shown[:, 32:].mean() < 15  # high stored values: dark
    thumb = _pixels(thumbnail_png(image, size=32))
    assert thumb[:, :14].mean() > 240 and thumb[:, 18:].mean() < 15


def test_monochrome2_low_values_render_dark() -> None:
    shown = _pixels(viewport_pngs(decode_image(_half_and_half("MONOCHROME2")), "dicom")[0])
    assert shown[:, :32].mean() < 15 and shown[:, 32:].mean() > 240


def test_viewport_png_is_the_windowed_frame_at_full_resolution() -> None:
    hu = np.array([[-1000, -160, 40, 239, 240, 3000]], dtype=np.float32)
    shown = _pixels(viewport_png(hu, CT_PRESETS["mediastinum"]))
    assert shown.shape == (1, 6) and shown.tolist() == [[0, 0, 128, 255, 255, 255]]
    assert viewport_png(hu, "mediastinum") == viewport_png(hu, CT_PRESETS["mediastinum"])
    with pytest.raises(WindowUnavailable):
        viewport_png(hu, "dicom")


def test_viewport_pngs_one_per_slice_per_ct_preset() -> None:
    hu = [-1000, 40, 1000]  # stored as is: no rescale in these slices
    series = decode_series(make_series(hu, [(0.0, 0.0, float(z)) for z in range(3)]))
    presets = presets_for(series.modality, series.image.has_dicom_window)
    assert presets == ["lung", "mediastinum", "bone", "brain"]
    rendered = {p: viewport_pngs(series.image, p) for p in presets}
    assert all(len(pngs) == 3 for pngs in rendered.values())
    shown = {p: [int(_pixels(png)[0, 0]) for png in pngs] for p, pngs in rendered.items()}
    # ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped, for x = -1000, 40, 1000 HU
    assert shown == {
        "lung": [60, 236, 255],
        "mediastinum": [0, 128, 255],
        "bone": [0, 77, 213],
        "brain": [0, 129, 255],
    }


def test_colour_viewport_is_shown_as_stored() -> None:
    rgb = np.random.default_rng(3).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = decode_image(
        reread(make_image(rgb, photometric="RGB", bits_allocated=8, modality="OT"))
    )
    assert presets_for(image.modality, image.has_dicom_window) == ["auto"]
    assert np.array_equal(_pixels(viewport_pngs(image, "auto")[0]), rgb)


def test_thumbnail_is_the_middle_slice_scaled_to_size() -> None:
    series = decode_series(
        make_series([-1000, 0, 40, 2000, 3000], [(0, 0, z) for z in range(5)], size=64)
    )
    thumb = _pixels(thumbnail_png(series.image, size=32, preset="mediastinum"))
    assert thumb.shape == (32, 32)
    assert int(thumb[16, 16]) == 128  # the middle slice, 40 HU, in the 40/400 window
    wide = decode_image(reread(make_image(np.zeros((30, 60), np.uint16), modality="MR")))
    assert _pixels(thumbnail_png(wide, size=40)).shape == (20, 40)


def test_preview_gif_samples_frames_evenly() -> None:
    series = decode_series(make_series(range(100), [(0, 0, z) for z in range(100)], size=16))
    gif = Image.open(io.BytesIO(preview_gif(series.image, "auto", max_frames=64, size=32)))
    frames = [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == 64 and frames[0].shape == (32, 32)
    brightness = [int(f[16, 16]) for f in frames]
    assert brightness == sorted(brightness) and brightness[0] < 10 and brightness[-1] > 245
    few = decode_series(make_series(range(3), [(0, 0, z) for z in range(3)]))
    assert Image.open(io.BytesIO(preview_gif(few.image))).n_frames == 3


def test_overlay_draws_boxes_masks_and_heatmaps() -> None:
    base = np.full((64, 64), 100, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[44:54, 40:50] = True
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[60, 2] = 1.0
    # The label sits above the box (rows ~5..19), clear of the mask and heatmap.
    shown = _pixels(overlay_png(base, [(10, 20, 30, 34, "nodule 0.91")], mask, heatmap))
    assert shown.shape == (64, 64, 3)
    assert shown[25, 10].tolist() == [255, 215, 0]  # left edge of the box
    assert shown[25, 20].tolist() == [100, 100, 100]  # inside the box: untouched
    inside = 0.35 * np.array(MASK_COLOR) + 0.65 * 100
    assert np.abs(shown[48, 45] - inside).max() <= 1  # semi-transparent fill
    assert shown[44, 45].tolist() == list(MASK_COLOR)  # opaque contour
    hot = 0.5 * heatmap_lut()[255] + 0.5 * 100
    assert np.abs(shown[60, 2] - hot).max() <= 1
    assert shown[60, 30].tolist() == [100, 100, 100]  # heatmap 0 is transparent


def test_overlay_layer_only_is_transparent_outside_findings() -> None:
    base = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1
    layer = _pixels(overlay_png(base, [(20, 20, 28, 28, None)], mask=mask, layer_only=True))
    assert layer.shape == (32, 32, 4)
    assert layer[2, 2, 3] == 0 and layer[12, 12, 3] == round(0.35 * 255)
    assert layer[24, 20].tolist() == [255, 215, 0, 255]


def test_overlay_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        overlay_png(np.zeros((8, 8), np.uint8), mask=np.zeros((4, 4), bool))
