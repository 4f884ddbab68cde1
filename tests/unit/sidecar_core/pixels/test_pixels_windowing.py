"""VOI windowing against PS3.3 C.11.2.1.2 worked by hand, presets, auto window, inversion."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar_core.pixels import (
    CT_PRESETS,
    InvalidWindow,
    UnknownPreset,
    Window,
    WindowUnavailable,
    apply_window,
    presets_for,
    resolve_window,
)
from sidecar_core.pixels.windowing import LINEAR_EXACT, SIGMOID, auto_window, default_preset


def _linear_reference(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.2.1 written out literally, output range 0..255, rounded."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return int(np.floor(((x - (c - 0.5)) / (w - 1) + 0.5) * 255 + 0.5))


@pytest.mark.parametrize("preset", list(CT_PRESETS))
def test_linear_window_matches_the_standard_formula(preset: str) -> None:
    window = CT_PRESETS[preset]
    c, w = window.center, window.width
    xs = np.concatenate(
        [np.linspace(c - w, c + w, 997), [c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2, c]]
    ).astype(np.float32)
    got = apply_window(xs, window)
    expected = [_linear_reference(float(x), c, w) for x in xs]
    assert np.abs(got.astype(int) - expected).max() <= 1  # float32 vs float64 at .5 edges
    assert got.dtype == np.uint8


def test_mediastinum_window_hand_values() -> None:
    hu = np.array([-1000, -160, 40, 239, 240, 3000], dtype=np.float32)
    assert apply_window(hu, CT_PRESETS["mediastinum"]).tolist() == [0, 0, 128, 255, 255, 255]


def test_lung_window_keeps_lung_and_air_apart() -> None:
    out = apply_window(np.array([-1000, -850, -600, 150], np.float32), CT_PRESETS["lung"])
    assert out[0] < out[1] < out[2] < out[3] and out[2] == 128


def test_invert_flips_after_windowing() -> None:
    hu = np.array([-1000, 40, 3000], dtype=np.float32)
    window = CT_PRESETS["mediastinum"]
    assert apply_window(hu, window, invert=True).tolist() == [255, 127, 0]


def test_linear_exact_and_sigmoid() -> None:
    exact = Window(100.0, 200.0, LINEAR_EXACT)
    assert apply_window(np.array([0, 100, 200], np.float32), exact).tolist() == [0, 128, 255]
    sigmoid = Window(0.0, 100.0, SIGMOID)
    out = apply_window(np.array([-1000, 0, 1000], np.float32), sigmoid).tolist()
    assert out == [0, 128, 255]


def test_nan_values_display_black() -> None:
    out = apply_window(np.array([np.nan, 40.0], np.float32), CT_PRESETS["mediastinum"])
    assert out.tolist() == [0, 128]


@pytest.mark.parametrize("width", [0.5, 0.0, -10.0, float("nan")])
def test_invalid_linear_width_is_rejected(width: float) -> None:
    with pytest.raises(InvalidWindow):
        Window(40.0, width)


def test_presets_for_modalities() -> None:
    assert presets_for("CT", False) == ["lung", "mediastinum", "bone", "brain"]
    assert presets_for("CT", True) == ["lung", "mediastinum", "bone", "brain", "dicom"]
    assert presets_for("MR", True) == ["dicom"]
    assert presets_for("MR", False) == ["auto"]
    assert presets_for("MG", False) == ["auto"]
    assert default_preset("CT", False) == "mediastinum"
    assert default_preset("MR", True) == "dicom"


def test_ct_presets_have_the_agreed_values() -> None:
    values = {name: (w.center, w.width) for name, w in CT_PRESETS.items()}
    assert values == {
        "lung": (-600.0, 1500.0),
        "mediastinum": (40.0, 400.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
    }


def test_auto_window_spans_first_to_99th_percentile() -> None:
    values = np.arange(10001, dtype=np.float32).reshape(1, 1, 10001) - 5000
    window = auto_window(values)
    assert window.center == pytest.approx(0.0)
    assert window.width == pytest.approx(9800.0)
    out = apply_window(values.ravel(), window)
    assert out[100] == 0 and out[9900] == 255  # the 1st and 99th percentile values


def test_auto_window_of_a_flat_image_is_valid() -> None:
    window = auto_window(np.full((4, 4), 7.0, np.float32))
    assert window.center == 7.0 and window.width == 1.0


def test_resolve_window() -> None:
    dicom = (Window(300.0, 1500.0, name="WINDOW1"),)
    assert resolve_window("bone") == CT_PRESETS["bone"]
    assert resolve_window("dicom", dicom_windows=dicom) is dicom[0]
    with pytest.raises(WindowUnavailable):
        resolve_window("dicom")
    with pytest.raises(UnknownPreset):
        resolve_window("abdomen")
