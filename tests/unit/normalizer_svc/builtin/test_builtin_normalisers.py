"""Built-in normalisers, the numpy labelling, ModelInput loading and the reference algorithms."""

from __future__ import annotations

import importlib.util
import sys
from collections import deque
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from normalizer_svc.builtin import BUILTIN_NORMALISERS, InvalidModelOutput, ModelInput
from normalizer_svc.builtin.labelling import bounding_boxes, label
from normalizer_svc.builtin.mammo_masses import merge_view_outputs
from normalizer_svc.geometry import voxel_to_patient
from sidecar_synth import generate
from sidecar_synth.readback import read_study, to_npz_bytes

ROOT = Path(__file__).resolve().parents[4]
MODELS = ROOT / "deploy" / "triton" / "models"
SMALL_CT = {"slices": 40, "rows": 192, "cols": 192, "slice_spacing": 2.5, "min_diameter_mm": 6.0}


def load_model(name: str) -> ModuleType:
    """Imports deploy/triton/models/<name>/1/model.py outside Triton (pb_utils stays None)."""
    version_dir = MODELS / name / "1"
    sys.path.insert(0, str(version_dir))
    try:
        spec = importlib.util.spec_from_file_location(f"reference_{name}", version_dir / "model.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(version_dir))


def flood_labels(mask: np.ndarray, connectivity: int) -> int:
    """Brute-force component count to check label() against."""
    seen = np.zeros(mask.shape, dtype=bool)
    offsets = [np.array(o) for o in np.ndindex(*(3,) * mask.ndim)]
    offsets = [
        o - 1
        for o in offsets
        if np.abs(o - 1).sum() > 0 and np.count_nonzero(o - 1) <= connectivity
    ]
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        count += 1
        queue = deque([np.array(start)])
        seen[start] = True
        while queue:
            here = queue.popleft()
            for offset in offsets:
                there = here + offset
                if (
                    ((there >= 0) & (there < mask.shape)).all()
                    and mask[tuple(there)]
                    and not seen[tuple(there)]
                ):
                    seen[tuple(there)] = True
                    queue.append(there)
    return count


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelInput, list]:
    out = tmp_path_factory.mktemp("chest")
    truth = generate("chest-ct", out, 31, nodules=2, tilt_deg=9.0, **SMALL_CT)
    return ModelInput.from_npz(to_npz_bytes(read_study(out))), truth.lesions


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((40, 40), 1), ((40, 40), 2), ((8, 16, 16), 1), ((8, 16, 16), 3)]
)
def test_labelling_matches_flood_fill(shape: tuple[int, ...], connectivity: int) -> None:
    mask = np.random.default_rng(1).random(shape) > 0.6
    labels, count = label(mask, connectivity)
    assert count == flood_labels(mask, connectivity)
    assert set(np.unique(labels[mask])) == set(range(1, count + 1))
    assert (labels[~mask] == 0).all()
    boxes = bounding_boxes(labels, count)
    for index, box in enumerate(boxes, start=1):
        coords = np.argwhere(labels == index)
        assert list(box) == [*coords.min(axis=0), *coords.max(axis=0)]


def test_labelling_copies_in_the_models_are_identical() -> None:
    source = (ROOT / "normalizer_svc" / "builtin" / "labelling.py").read_text()
    for name in BUILTIN_NORMALISERS:
        assert (MODELS / name / "1" / "_labelling.py").read_text() == source, name


def test_model_input_from_npz_checks_format(chest: tuple[ModelInput, list]) -> None:
    model_input, _ = chest
    assert model_input.volume.dtype == np.float32 and model_input.modality == "CT"
    assert model_input.spacing_zyx.tolist() == pytest.approx([2.5, 340 / 192, 340 / 192], rel=1e-4)
    arrays = {"format": np.array("other.v9"), "volume": np.zeros((1, 2, 2))}
    with pytest.raises(ValueError, match="format"):
        ModelInput.from_arrays(arrays)
    arrays["format"] = np.array("sidecar.model_input.v1")
    with pytest.raises(ValueError, match="lacks"):
        ModelInput.from_arrays(arrays)


def test_chest_algorithm_and_normaliser_find_the_nodules(chest: tuple[ModelInput, list]) -> None:
    model_input, lesions = chest
    boxes, scores = load_model("chest_ct_nodules").detect_nodules(
        model_input.volume, model_input.spacing_zyx
    )
    findings = BUILTIN_NORMALISERS["chest_ct_nodules"](
        model_input, {"BOXES": boxes, "SCORES": scores}, "chest_ct_nodules", "reference-1.0.0"
    )
    assert len(findings) == len(lesions) == 2
    for lesion in lesions:
        best = min(
            findings, key=lambda f: np.linalg.norm(np.subtract(f.center_mm, lesion.center_mm))
        )
        assert np.linalg.norm(np.subtract(best.center_mm, lesion.center_mm)) < 5.0
        assert best.sop_instance_uid == lesion.sop_instance_uid
        assert best.kind == "box" and best.code == "SCT:27925004" and 0 < best.confidence <= 1
        assert best.measurements["diameter_mm"] == pytest.approx(lesion.diameter_mm, abs=6.0)
        x0, y0, x1, y1 = best.bbox_px
        assert x0 <= lesion.center_voxel[0] <= x1 and y0 <= lesion.center_voxel[1] <= y1


def test_chest_normaliser_geometry_uses_the_key_slice(chest: tuple[ModelInput, list]) -> None:
    model_input, _ = chest
    outputs = {
        "BOXES": np.array([[10, 40, 50, 13, 46, 58]], np.float32),
        "SCORES": np.array([0.7], np.float32),
    }
    [finding] = BUILTIN_NORMALISERS["chest_ct_nodules"](model_input, outputs, "m", "1")
    assert finding.sop_instance_uid == model_input.sop_instance_uids[12]  # centre 11.5 → 12
    assert finding.frame == 1 and finding.bbox_px == [50.0, 40.0, 58.0, 46.0]
    assert np.allclose(finding.center_mm, voxel_to_patient(model_input, 54.0, 43.0, 11.5))


BAD_CHEST_OUTPUTS = [
    ({"SCORES": np.zeros(0, np.float32)}, "missing"),
    ({"BOXES": np.ones((3, 5), np.float32), "SCORES": np.ones(3, np.float32)}, "shape"),
    ({"BOXES": np.full((1, 6), np.nan, np.float32), "SCORES": np.ones(1, np.float32)}, "NaN"),
    ({"BOXES": np.zeros((0, 6), np.float32), "SCORES": np.ones(3, np.float32)}, "3 values"),
    ({"BOXES": np.ones((1, 6), np.float32), "SCORES": np.array([7.0], np.float32)}, "0..1"),
    ({"BOXES": np.array([[0, 0, 0, 99, 99, 999]], np.float32), "SCORES": np.ones(1)}, "outside"),
    ({"BOXES": np.array([[5, 5, 5, 1, 6, 6]], np.float32), "SCORES": np.ones(1)}, "inverted"),
]


@pytest.mark.parametrize(("outputs", "message"), BAD_CHEST_OUTPUTS)
def test_chest_normaliser_rejects_broken_outputs(
    chest: tuple[ModelInput, list], outputs: dict, message: str
) -> None:
    with pytest.raises(InvalidModelOutput, match=message):
        BUILTIN_NORMALISERS["chest_ct_nodules"](chest[0], outputs, "m", "1")


def test_empty_but_well_formed_output_means_no_findings(chest: tuple[ModelInput, list]) -> None:
    outputs = {"BOXES": np.zeros((0, 6), np.float32), "SCORES": np.zeros(0, np.float32)}
    assert BUILTIN_NORMALISERS["chest_ct_nodules"](chest[0], outputs, "m", "1") == []


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_mammo_algorithm_and_normaliser(tmp_path: Path, photometric: str) -> None:
    truth = generate(
        "mammo",
        tmp_path,
        2010 if photometric == "MONOCHROME2" else 2003,
        masses=2,
        photometric=photometric,
    )
    model_input = ModelInput.from_arrays(read_study(tmp_path))
    detect = load_model("mammo_masses").detect_masses
    per_image = []
    for image in model_input.volume:
        boxes, scores, suspicion = detect(image, model_input.pixel_spacing)
        per_image.append(
            {"BOXES": boxes, "SCORES": scores, "SUSPICION": np.array([suspicion], np.float32)}
        )
    findings = BUILTIN_NORMALISERS["mammo_masses"](
        model_input, merge_view_outputs(per_image), "mammo_masses", "1"
    )
    boxes = [f for f in findings if f.kind == "box"]
    [study] = [f for f in findings if f.kind == "classification"]
    assert len(study.measurements) == 4
    assert study.confidence == pytest.approx(max(study.measurements.values()), abs=1e-4)
    for lesion in truth.lesions:
        hits = [
            f
            for f in boxes
            if f.sop_instance_uid == lesion.sop_instance_uid
            and f.bbox_px[0] <= lesion.center_voxel[0] <= f.bbox_px[2]
            and f.bbox_px[1] <= lesion.center_voxel[1] <= f.bbox_px[3]
        ]
        assert hits, f"missed the mass on {lesion.view}"
        assert hits[0].properties["view"] == lesion.view and hits[0].center_mm is None
        assert study.confidence >= hits[0].confidence


def test_mammo_normaliser_needs_image_index_for_several_images(tmp_path: Path) -> None:
    generate("mammo", tmp_path, 1, negative=True)
    model_input = ModelInput.from_arrays(read_study(tmp_path))
    outputs = {
        "BOXES": np.ones((1, 4), np.float32),
        "SCORES": np.ones(1, np.float32),
        "SUSPICION": np.ones(4, np.float32),
    }
    with pytest.raises(InvalidModelOutput, match="IMAGE_INDEX"):
        BUILTIN_NORMALISERS["mammo_masses"](model_input, outputs, "m", "1")
    outputs["IMAGE_INDEX"] = np.array([7])
    with pytest.raises(InvalidModelOutput, match="IMAGE_INDEX"):
        BUILTIN_NORMALISERS["mammo_masses"](model_input, outputs, "m", "1")


def test_brain_algorithm_and_normaliser(tmp_path: Path) -> None:
    truth = generate("brain-mr", tmp_path, 1003, lesions=2)
    model_input = ModelInput.from_arrays(read_study(tmp_path))
    mask = load_model("brain_mr_lesions").segment_lesions(
        model_input.volume, model_input.spacing_zyx
    )
    assert mask.dtype == np.uint8 and mask.shape == model_input.volume.shape
    findings = BUILTIN_NORMALISERS["brain_mr_lesions"](model_input, {"MASK": mask}, "b", "1")
    assert len(findings) == 2
    for lesion in truth.lesions:
        [hit] = [
            f for f in findings if np.linalg.norm(np.subtract(f.center_mm, lesion.center_mm)) < 5.0
        ]
        assert hit.kind == "mask" and hit.mask is not None and hit.mask.shape == mask.shape
        assert hit.measurements["volume_ml"] == pytest.approx(lesion.volume_ml, rel=0.1)
        assert hit.sop_instance_uid == lesion.sop_instance_uid


def test_brain_normaliser_rejects_a_mask_of_the_wrong_shape(chest: tuple[ModelInput, list]) -> None:
    with pytest.raises(InvalidModelOutput, match="MASK shape"):
        BUILTIN_NORMALISERS["brain_mr_lesions"](
            chest[0], {"MASK": np.zeros((1, 2, 3), np.uint8)}, "b", "1"
        )
    with pytest.raises(InvalidModelOutput, match="other than 0 and 1"):
        BUILTIN_NORMALISERS["brain_mr_lesions"](
            chest[0], {"MASK": np.full(chest[0].volume.shape, 3, np.uint8)}, "b", "1"
        )
