"""Display windows: modality presets, the file's window, an auto window, the VOI LUT to uint8."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sidecar_core.pixels.errors import InvalidWindow, UnknownPreset, WindowUnavailable

LINEAR = "LINEAR"
LINEAR_EXACT = "LINEAR_EXACT"
SIGMOID = "SIGMOID"
VOI_LUT_FUNCTIONS = (LINEAR, LINEAR_EXACT, SIGMOID)

DICOM_PRESET = "dicom"
AUTO_PRESET = "auto"


@dataclass(frozen=True)
class Window:
    """A VOI window in the units of the modality-transformed pixels (e.g. HU for CT)."""

    center: float
    width: float
    function: str = LINEAR
    name: str = ""

    def __post_init__(self) -> None:
        if self.function not in VOI_LUT_FUNCTIONS:
            raise InvalidWindow(f"unknown VOI LUT function {self.function!r}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise InvalidWindow(f"window {self.center}/{self.width} is not finite")
        # PS3.3 C.11.2.1.2.1: width >= 1 for LINEAR; > 0 for LINEAR_EXACT and SIGMOID.
        if self.width < 1 if self.function == LINEAR else self.width <= 0:
            raise InvalidWindow(f"window width {self.width} is invalid for {self.function}")


CT_PRESETS: dict[str, Window] = {
    "lung": Window(-600.0, 1500.0, name="lung"),
    "mediastinum": Window(40.0, 400.0, name="mediastinum"),
    "bone": Window(400.0, 1800.0, name="bone"),
    "brain": Window(40.0, 80.0, name="brain"),
}

AUTO_LOW_PERCENTILE = 1.0
AUTO_HIGH_PERCENTILE = 99.0
_AUTO_MAX_SAMPLES = 1_000_000


def presets_for(modality: str, has_dicom_window: bool) -> list[str]:
    """Preset names that fit a modality: CT gets the HU presets, others the file window or auto."""
    if modality.upper() == "CT":
        return [*CT_PRESETS, *([DICOM_PRESET] if has_dicom_window else [])]
    return [DICOM_PRESET] if has_dicom_window else [AUTO_PRESET]


def default_preset(modality: str, has_dicom_window: bool) -> str:
    """The one preset used for a thumbnail or preview when the caller names none."""
    if has_dicom_window:
        return DICOM_PRESET
    return "mediastinum" if modality.upper() == "CT" else AUTO_PRESET


def auto_window(values: np.ndarray) -> Window:
    """Window spanning the 1st to 99th percentile of the finite values (a subsample if large)."""
    flat = values.reshape(-1)
    if flat.size > _AUTO_MAX_SAMPLES:
        flat = flat[:: flat.size // _AUTO_MAX_SAMPLES + 1]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return Window(0.0, 1.0, LINEAR_EXACT, AUTO_PRESET)
    low, high = np.percentile(flat, [AUTO_LOW_PERCENTILE, AUTO_HIGH_PERCENTILE])
    if high <= low:  # flat image: fall back to the full range, then to a unit window
        low, high = float(flat.min()), float(flat.max())
    width = float(high - low) if high > low else 1.0
    return Window(float(low + high) / 2.0, width, LINEAR_EXACT, AUTO_PRESET)


def resolve_window(
    preset: str,
    *,
    values: np.ndarray | None = None,
    dicom_windows: Sequence[Window] = (),
) -> Window:
    """Turn a preset name into a Window: a CT preset, the file's first window, or auto."""
    if preset in CT_PRESETS:
        return CT_PRESETS[preset]
    if preset == DICOM_PRESET:
        if not dicom_windows:
            raise WindowUnavailable("the image carries no Window Center/Width")
        return dicom_windows[0]
    if preset == AUTO_PRESET:
        if values is None:
            raise WindowUnavailable("the auto window needs the pixel values")
        return auto_window(values)
    raise UnknownPreset(f"unknown window preset {preset!r}")


def apply_window(values: np.ndarray, window: Window, *, invert: bool = False) -> np.ndarray:
    """Map modality values to uint8 display values with the window's VOI LUT function.

    LINEAR follows PS3.3 C.11.2.1.2.1 (the ``c - 0.5`` and ``w - 1`` form), LINEAR_EXACT
    C.11.2.1.3.2 and SIGMOID C.11.2.1.3.1, each with an output range of 0..255. ``invert``
    (MONOCHROME1) flips the result after windowing so that low values display bright.
    """
    c, w = window.center, window.width
    x = np.asarray(values, dtype=np.float32)
    if window.function == SIGMOID:
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - np.float32(c)) / np.float32(w)))
    else:
        if window.function == LINEAR and w == 1:  # degenerate: a threshold at c - 0.5
            y = np.where(x > c - 0.5, np.float32(255.0), np.float32(0.0))
        else:
            if window.function == LINEAR:
                scale, zero = 255.0 / (w - 1.0), c - 0.5 - (w - 1.0) / 2.0
            else:
                scale, zero = 255.0 / w, c - w / 2.0
            # y = (x - zero) * scale, computed as one fused multiply-add in float32
            y = x * np.float32(scale)
            y += np.float32(-zero * scale)
    y = np.asarray(y, dtype=np.float32)
    np.fmax(y, np.float32(0.0), out=y)  # fmax also maps NaN (float pixel data) to 0
    np.minimum(y, np.float32(255.0), out=y)
    y += np.float32(0.5)
    out = y.astype(np.uint8)
    if invert:
        np.subtract(np.uint8(255), out, out=out)
    return out
