"""Colour pixels to 8-bit RGB for display: high bit-depth RGB and PALETTE COLOR lookup."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut

from sidecar_core.pixels.errors import InvalidPixelDescription


def rgb_to_uint8(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
    """Scale RGB samples of ``bits_stored`` bits to 0..255 (an exact copy for 8-bit data)."""
    if rgb.dtype == np.uint8 and bits_stored >= 8:
        return rgb
    if bits_stored <= 8:
        scaled = rgb.astype(np.float32) * (255.0 / float((1 << bits_stored) - 1))
        return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    shifted = np.right_shift(rgb.astype(np.uint32, copy=False), bits_stored - 8)
    return np.minimum(shifted, 255).astype(np.uint8)


def palette_to_rgb(indices: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the Red/Green/Blue Palette Color LUTs (normal or segmented), returning uint8 RGB."""
    try:
        rgb = apply_color_lut(indices, ds)
        descriptor = ds.RedPaletteColorLookupTableDescriptor
    except (AttributeError, KeyError, IndexError, ValueError) as exc:
        raise InvalidPixelDescription(f"unusable Palette Color Lookup Table: {exc}") from exc
    entry_bits = int(descriptor[2])
    if entry_bits not in (8, 16):
        raise InvalidPixelDescription(f"palette LUT entries of {entry_bits} bits")
    return rgb_to_uint8(np.asarray(rgb), entry_bits)
