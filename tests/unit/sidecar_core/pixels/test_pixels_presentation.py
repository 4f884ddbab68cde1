"""Presentation LUT Shape (2050,0020): INVERSE, IDENTITY and their meeting with MONOCHROME1."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageSequence
from pydicom.dataset import Dataset

from sidecar_core.display.render import preview_gif, thumbnail_png, viewport_pngs
from sidecar_core.pixels import decode_image, decode_series
from sidecar_core.pixels.presentation import inverts_display, presentation_lut_shape
from tests.unit.sidecar_core.pixels.test_pixels_support import make_image, reread

# Every dataset here is built in the test with pydicom (test_pixels_support, imported above).
# The image: stored 100 on the left half, 3000 on the right, window 1550/3000.


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _half_and_half(photometric: str, shape: str | None, frames: int = 1) -> Dataset:
    stored = np.full((frames, 64, 64), 3000, np.uint16)
    stored[:, :, :32] = 100
    stored[:, :, 32:] -= np.arange(frames, dtype=np.uint16)[:, None, None] * 20  # frames differ
    ds = make_image(stored, photometric=photometric, bits_stored=12, modality="DX")
    ds.WindowCenter, ds.WindowWidth = 1550, 3000
    if shape is not None:
        ds.PresentationLUTShape = shape
    return reread(ds)


def _low_is_bright(shown: np.ndarray) -> bool:
    """Left (stored 100) bright and right (stored 3000) dark; raises if neither polarity."""
    left, right = shown[:, : shown.shape[1] // 2 - 2], shown[:, shown.shape[1] // 2 + 2 :]
    if left.min() > 240 and right.max() < 15:
        return True
    if left.max() < 15 and right.min() > 240:
        return False
    raise AssertionError(f"no clean polarity: left {left.mean():.0f}, right {right.mean():.0f}")


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),  # C.11.6.1.2: P-Value = max - output
        ("MONOCHROME1", None, True),  # C.7.6.3.1.2: minimum displays white
        ("MONOCHROME1", "INVERSE", True),  # C.7.6.1: INVERSE *is* MONOCHROME1's inversion
        ("MONOCHROME1", "IDENTITY", False),  # non-conformant pair: the shape decides
        ("MONOCHROME2", "LIN OD", False),  # hardcopy shape: ignored, PI decides
        ("MONOCHROME1", "LIN OD", True),
    ],
)
def test_display_polarity(photometric: str, shape: str | None, inverted: bool) -> None:
    image = decode_image(_half_and_half(photometric, shape))
    assert image.display_inverted is inverted
    for preset in ("dicom", "auto"):
        assert _low_is_bright(_pixels(viewport_pngs(image, preset)[0])) is inverted
    assert _low_is_bright(_pixels(thumbnail_png(image, size=32))) is inverted


def test_inverse_on_monochrome2_is_exactly_255_minus_identity() -> None:
    plain = _pixels(viewport_pngs(decode_image(_half_and_half("MONOCHROME2", None)), "dicom")[0])
    inverse = decode_image(_half_and_half("MONOCHROME2", "INVERSE"))
    shown = _pixels(viewport_pngs(inverse, "dicom")[0])
    assert np.array_equal(shown, 255 - plain)
    # ((x - 1549.5) / 2999 + 0.5) * 255: x = 100 -> 4, x = 3000 -> 251, then inverted
    assert shown[0, 0] == 255 - 4 and shown[0, 63] == 255 - 251


def test_identity_changes_nothing() -> None:
    plain = decode_image(_half_and_half("MONOCHROME2", None))
    identity = decode_image(_half_and_half("MONOCHROME2", "IDENTITY"))
    assert viewport_pngs(identity, "dicom") == viewport_pngs(plain, "dicom")
    assert thumbnail_png(identity) == thumbnail_png(plain)


def test_monochrome1_inverse_is_not_inverted_twice() -> None:
    alone = decode_image(_half_and_half("MONOCHROME1", None))
    inverse = decode_image(_half_and_half("MONOCHROME1", "INVERSE"))
    assert viewport_pngs(inverse, "dicom") == viewport_pngs(alone, "dicom")
    assert thumbnail_png(inverse) == thumbnail_png(alone)
    assert _pixels(viewport_pngs(inverse, "dicom")[0])[0, 0] == 255 - 4  # low stored: bright


def test_inverse_reaches_the_preview_and_survives_series_stacking() -> None:
    series = decode_series([_half_and_half("MONOCHROME2", "INVERSE", frames=3)])
    assert series.image.presentation_lut_shape == "INVERSE"
    gif = Image.open(io.BytesIO(preview_gif(series.image, "dicom", size=64)))
    frames = [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == 3 and all(_low_is_bright(f) for f in frames)


def test_colour_images_ignore_the_shape() -> None:
    rgb = np.random.default_rng(3).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    ds = make_image(rgb, photometric="RGB", bits_allocated=8, modality="OT")
    ds.PresentationLUTShape = "INVERSE"
    image = decode_image(reread(ds))
    assert not image.display_inverted
    assert np.array_equal(_pixels(viewport_pngs(image, "auto")[0]), rgb)


def test_shape_reading_and_rules() -> None:
    ds = Dataset()
    assert presentation_lut_shape(ds) == ""
    ds.PresentationLUTShape = "INVERSE "
    assert presentation_lut_shape(ds) == "INVERSE"
    ds.PresentationLUTShape = "LIN OD"
    assert presentation_lut_shape(ds) == ""
    shapes = ("", "IDENTITY", "INVERSE")
    table = [inverts_display(monochrome1, s) for monochrome1 in (False, True) for s in shapes]
    assert table == [False, False, True, True, False, True]
