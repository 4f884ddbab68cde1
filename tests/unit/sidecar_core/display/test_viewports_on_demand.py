"""A viewport rendered on demand from one stored slice equals the one the series would render."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset

from sidecar_core.display.render import presets_for, viewport_pngs
from sidecar_core.display.viewports import render_slice, series_windows, slice_refs
from sidecar_core.pixels import decode_series
from tests.unit.sidecar_core.pixels.test_pixels_support import make_series


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_one_slice_on_demand_matches_the_whole_series_render(modality: str) -> None:
    values = [-900, 300, 40, 1200, -50]  # files out of anatomical order
    positions = [(0.0, 0.0, float(z)) for z in (3, 0, 4, 1, 2)]
    datasets = make_series(values, positions, modality=modality)
    series = decode_series(datasets)
    presets = presets_for(series.modality, series.image.has_dicom_window)
    windows = series_windows(series, presets)
    refs = slice_refs(series)
    files = {str(ds.SOPInstanceUID): _bytes(ds) for ds in datasets}
    assert [r[0] for r in refs] == [str(datasets[i].SOPInstanceUID) for i in (1, 3, 4, 0, 2)]
    for preset in presets:
        eager = viewport_pngs(series.image, preset)
        for z, (sop, frame) in enumerate(refs):
            assert render_slice(files[sop], frame, preset, windows[preset]) == eager[z], (
                preset, z)


def test_auto_window_is_the_series_one_not_the_slice_one() -> None:
    datasets = make_series([0, 1000], [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0)], modality="MR")
    series = decode_series(datasets)
    window = series_windows(series, ["auto"])["auto"]
    assert window is not None and window["width"] > 1  # one slice alone would be flat
    alone = render_slice(_bytes(datasets[0]), 1, "auto", None)
    assert render_slice(_bytes(datasets[0]), 1, "auto", window) != alone
