"""The fast PNG encoder: every image decodes back exactly with an independent reader (Pillow)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sidecar_core.pixels.png import encode_png

RNG = np.random.default_rng(99)


@pytest.mark.parametrize(
    ("shape", "mode"),
    [
        ((1, 1), "L"),
        ((17, 31), "L"),
        ((512, 512), "L"),
        ((9, 5, 2), "LA"),
        ((13, 7, 3), "RGB"),
        ((8, 3, 4), "RGBA"),
    ],
)
def test_encoded_png_decodes_to_the_same_pixels(shape: tuple[int, ...], mode: str) -> None:
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    decoded.load()
    assert decoded.mode == mode
    assert np.array_equal(np.asarray(decoded), pixels)


def test_smooth_images_compress() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    assert len(encode_png(ramp)) < ramp.size // 20


def test_wrong_input_is_rejected() -> None:
    with pytest.raises(TypeError):
        encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError):
        encode_png(np.zeros((0, 4), np.uint8))
