"""The reference models' fast paths against their definitions; the mammo model on noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from normalizer_svc.builtin import ModelInput
from sidecar_synth import generate
from sidecar_synth.readback import read_study
from tests.unit.normalizer_svc.builtin.test_builtin_normalisers import load_model

# The case: flat tissue at 900, detector noise sigma 25, 0.5 mm pixels, two 7-12 mm masses.
NOISY_MAMMO = {"tissue_level": 900.0, "noise_sigma": 25.0, "masses": 2,
               "mass_diameter_mm": (7.0, 12.0)}


@pytest.fixture(scope="module")
def chest():  # type: ignore[no-untyped-def]
    return load_model("chest_ct_nodules")


@pytest.fixture(scope="module")
def mammo():  # type: ignore[no-untyped-def]
    return load_model("mammo_masses")


def _lung_within_by_definition(lung: np.ndarray, axis: int, reach: int) -> np.ndarray:
    """Lung within `reach` voxels on both sides, voxel by voxel along the axis."""
    moved = np.moveaxis(lung, axis, 0)
    out = np.zeros(moved.shape, dtype=bool)
    n = moved.shape[0]
    for i in range(n):
        behind = moved[max(0, i - reach):i].any(axis=0)
        ahead = moved[i + 1:i + 1 + reach].any(axis=0)
        out[i] = behind & ahead
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("reach", [1, 2, 3, 5, 8, 13, 27])
def test_windowed_lung_search_matches_its_definition(chest, reach: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(reach)
    for shape in ((9, 11, 13), (30, 7, 5)):
        lung = rng.random(shape) < 0.15
        for axis in range(3):
            np.testing.assert_array_equal(chest._lung_within(lung, axis, reach),
                                          _lung_within_by_definition(lung, axis, reach))


def test_inside_body_is_between_the_first_and_last_body_pixel(chest) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    body = rng.random((4, 12, 10)) < 0.2
    body[1] = False  # a slice without body: nothing is inside
    expected = np.ones(body.shape, dtype=bool)
    for axis in (1, 2):
        before = np.maximum.accumulate(body, axis=axis)
        after = np.flip(np.maximum.accumulate(np.flip(body, axis=axis), axis=axis), axis=axis)
        expected &= before & after
    np.testing.assert_array_equal(chest._inside_body(body), expected)


def test_a_volume_without_lung_has_no_candidates(chest) -> None:  # type: ignore[no-untyped-def]
    boxes, scores = chest.detect_nodules(np.full((8, 32, 32), 40.0, np.float32),
                                         np.array([2.0, 1.0, 1.0], np.float32))
    assert boxes.shape == (0, 6) and scores.shape == (0,)


def _views(tmp_path: Path, seed: int, **options: object) -> tuple[ModelInput, list]:
    truth = generate("mammo", tmp_path / f"s{seed}", seed, **options)
    return ModelInput.from_arrays(read_study(tmp_path / f"s{seed}")), truth.lesions


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_mammo_model_ignores_detector_noise(mammo, tmp_path: Path, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Both masses found, at most one false positive in the study (it used to be ~17)."""
    model_input, lesions = _views(tmp_path, seed, **NOISY_MAMMO)
    assert len(lesions) == 2
    false_positives, found = 0, 0
    for k, sop in enumerate(model_input.sop_instance_uids):
        boxes, _, _ = mammo.detect_masses(model_input.volume[k],
                                          np.asarray(model_input.pixel_spacing))
        mine = [lesion for lesion in lesions if lesion.sop_instance_uid == sop]
        for x0, y0, x1, y1 in boxes:
            hit = [lesion for lesion in mine if x0 <= lesion.center_voxel[0] <= x1
                   and y0 <= lesion.center_voxel[1] <= y1]
            found += bool(hit)
            false_positives += not hit
    assert found == 2
    assert false_positives <= 1


def test_mammo_noise_estimate_ignores_smooth_tissue(mammo) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:200, 0:200]
    smooth = 900.0 + 100.0 * np.sin(xx / 60.0) * np.cos(yy / 80.0)  # glandular-scale texture
    interior = np.ones((200, 200), dtype=bool)
    assert mammo._pixel_noise(smooth + rng.normal(0, 25, smooth.shape), interior) == \
        pytest.approx(25.0, rel=0.1)
    assert mammo._pixel_noise(smooth, interior) < 3.0
