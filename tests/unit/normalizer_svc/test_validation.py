"""Output and finding validation: every broken contract is rejected with a precise message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from normalizer_svc.builtin.findings import FindingDraft
from normalizer_svc.builtin.model_input import ModelInput
from normalizer_svc.validation import InvalidResult, validate_findings, validate_outputs
from sidecar_core.errors import PermanentError
from sidecar_core.registry import load_registry

SOPS = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]


@pytest.fixture(scope="module")
def model_input() -> ModelInput:
    z, y, x = 3, 64, 48
    return ModelInput(
        volume=np.zeros((z, y, x), np.float32),
        positions=np.array([[0.0, 0.0, k * 2.0] for k in range(z)]),
        orientation=np.array([1.0, 0, 0, 0, 1, 0]),
        pixel_spacing=np.array([0.7, 0.7]),
        slice_spacing=2.0,
        sop_instance_uids=np.array(SOPS),
        frames=np.ones(z, np.int32),
        modality="CT",
        laterality=np.array([""] * z),
        view_position=np.array([""] * z),
    )


def box(**changes: object) -> FindingDraft:
    f = FindingDraft(label="nodule candidate", code="SCT:27925004", confidence=0.8, kind="box",
                     model_name="chest_ct_nodules", model_version="1", sop_instance_uid=SOPS[1],
                     frame=1, bbox_px=[10.0, 12.0, 20.0, 22.0], center_mm=[7.0, 8.4, 2.0],
                     measurements={"diameter_mm": 7.0}, series_instance_uid="1.2.3")
    # Bypass FindingDraft's own checks: external normalisers are not bound by them.
    for key, value in changes.items():
        object.__setattr__(f, key, value)
    return f


def chest_specs():
    return load_registry().get("chest_ct_nodules").outputs


def good_outputs() -> dict[str, np.ndarray]:
    return {"BOXES": np.array([[0, 1, 2, 1, 5, 6]], np.float32),
            "SCORES": np.array([0.9], np.float32)}


def test_valid_outputs_pass() -> None:
    validate_outputs("chest_ct_nodules", chest_specs(), good_outputs())
    empty = {"BOXES": np.zeros((0, 6), np.float32), "SCORES": np.zeros((0,), np.float32)}
    validate_outputs("chest_ct_nodules", chest_specs(), empty)  # no candidates is valid


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BOXES": None}, "chest_ct_nodules returned no BOXES (got SCORES)"),
        ({"SCORES": np.array([0.9], np.float64)},
         "output SCORES of chest_ct_nodules is float64, expected FP32 (float32)"),
        ({"BOXES": np.zeros((1, 1, 6), np.float32)},
         "output BOXES of chest_ct_nodules has shape [1, 1, 6] (rank 3), expected rank 2"),
        ({"BOXES": np.zeros((1, 5), np.float32)},
         "output BOXES of chest_ct_nodules has shape [1, 5], expected [N, 6]"),
        ({"SCORES": np.array([np.nan], np.float32)},
         "output SCORES of chest_ct_nodules contains 1 NaN/Inf value"),
        ({"BOXES": np.full((1, 6), np.inf, np.float32)}, "contains 6 NaN/Inf values"),
        ({"SCORES": np.array([0.9, 0.8], np.float32)},
         "output BOXES of chest_ct_nodules has 1 rows but SCORES has 2"),
    ],
)
def test_broken_outputs_are_invalid(change: dict, message: str) -> None:
    outputs = good_outputs()
    for key, value in change.items():
        if value is None:
            del outputs[key]
        else:
            outputs[key] = value
    with pytest.raises(InvalidResult) as err:
        validate_outputs("chest_ct_nodules", chest_specs(), outputs)
    assert message in str(err.value)
    assert isinstance(err.value, PermanentError)


def test_empty_mask_is_invalid() -> None:
    specs = load_registry().get("brain_mr_lesions").outputs
    validate_outputs("brain_mr_lesions", specs, {"MASK": np.zeros((3, 4, 4), np.uint8)})
    with pytest.raises(InvalidResult, match=r"output MASK of brain_mr_lesions is empty "
                                            r"\(shape \[3, 0, 4\]\)"):
        validate_outputs("brain_mr_lesions", specs, {"MASK": np.zeros((3, 0, 4), np.uint8)})
    with pytest.raises(InvalidResult, match="returned no MASK .got no outputs"):
        validate_outputs("brain_mr_lesions", specs, {})


def test_valid_findings_pass(model_input: ModelInput) -> None:
    mask = box(kind="mask", bbox_px=None, mask=np.zeros((3, 64, 48), bool))
    summary = box(kind="summary", sop_instance_uid=None, frame=None, bbox_px=None,
                  center_mm=None, summary="no lesion")
    edge = box(bbox_px=[0.0, 0.0, 48.0, 64.0])
    validate_findings([box(), mask, summary, edge], model_input, "1.2.3")
    validate_findings([], model_input, "1.2.3")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confidence": 1.5}, "finding 1 (nodule candidate): confidence 1.5 is not a finite "
                              "number in 0..1"),
        ({"confidence": float("nan")}, "confidence nan is not a finite number in 0..1"),
        ({"confidence": -0.1}, "confidence -0.1 is not"),
        ({"kind": "blob"}, "kind 'blob' is not one of classification, box"),
        ({"label": " "}, "finding 1: label is empty"),
        ({"bbox_px": [10.0, 12.0, 49.0, 22.0]},
         "bbox_px [10, 12, 49, 22] is not inside the 48×64 image "
         "(need 0 ≤ x_min ≤ x_max ≤ 48 and 0 ≤ y_min ≤ y_max ≤ 64)"),
        ({"bbox_px": [20.0, 12.0, 10.0, 22.0]}, "bbox_px [20, 12, 10, 22] is not inside"),
        ({"bbox_px": [-1.0, 12.0, 10.0, 22.0]}, "bbox_px [-1, 12, 10, 22] is not inside"),
        ({"bbox_px": [1.0, 2.0, 3.0]}, "bbox_px [1.0, 2.0, 3.0] must be 4 finite numbers"),
        ({"bbox_px": None}, "a box finding has no bbox_px"),
        ({"sop_instance_uid": "9.9.9"},
         "SOPInstanceUID 9.9.9 does not belong to the series"),
        ({"sop_instance_uid": ""},
         "a box finding must reference an image (SOPInstanceUID is empty)"),
        ({"frame": 2}, f"frame 2 does not exist in instance {SOPS[1]}"),
        ({"center_mm": [1.0, 2.0]}, "center_mm [1.0, 2.0] must be 3 finite numbers"),
        ({"center_mm": [1.0, float("inf"), 2.0]}, "must be 3 finite numbers [x, y, z] mm"),
        ({"series_instance_uid": "4.5.6"}, "series 4.5.6 is not the series of the run (1.2.3)"),
        ({"measurements": {"diameter_mm": float("nan")}},
         "measurement diameter_mm = nan is not a finite number"),
        ({"kind": "mask", "mask": np.zeros((2, 64, 48), bool)},
         "mask shape [2, 64, 48] matches neither [64, 48] nor [3, 64, 48]"),
        ({"kind": "mask", "mask": np.full((64, 48), 7, np.uint8)}, "mask values must be 0 or 1"),
        ({"kind": "point", "properties": {"points_px": [1.0, 2.0, 3.0]}},
         "points_px must be finite [x0, y0, x1, y1, ...] pairs, got 3 values"),
        ({"kind": "polygon", "properties": {"points_px": [1.0, 2.0, 300.0, 2.0]}},
         "points_px leave the 48×64 image"),
        ({"kind": "point", "properties": {}}, "a point finding has no points_px"),
    ],
)
def test_invalid_findings_say_what_is_wrong(model_input: ModelInput, changes: dict,
                                            message: str) -> None:
    with pytest.raises(InvalidResult) as err:
        validate_findings([box(**changes)], model_input, "1.2.3")
    assert message in str(err.value)


def test_names_the_offending_finding(model_input: ModelInput) -> None:
    with pytest.raises(InvalidResult, match=r"^finding 3 \(nodule candidate\): "):
        validate_findings([box(), box(), box(confidence=2.0)], model_input, "1.2.3")


def test_multiframe_references(model_input: ModelInput) -> None:
    """A multi-frame instance: frames 1..3 of one SOP instance."""
    multi = dataclasses.replace(model_input, sop_instance_uids=np.array([SOPS[0]] * 3),
                                frames=np.array([1, 2, 3], np.int32))
    validate_findings([box(sop_instance_uid=SOPS[0], frame=3)], multi, "1.2.3")
    with pytest.raises(InvalidResult, match="frame 4 does not exist"):
        validate_findings([box(sop_instance_uid=SOPS[0], frame=4)], multi, "1.2.3")
