"""Built-in normaliser of the mammo_masses reference model: mass boxes + a study suspicion.

The model sees one view per request. For a study the dispatcher runs it per image and merges
the answers with merge_view_outputs(): BOXES [N, 4], SCORES [N], IMAGE_INDEX [N] (which entry
of the model input each box is on) and SUSPICION [Z] (one per image). A single-image answer
without IMAGE_INDEX is accepted when the model input holds exactly one image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from normalizer_svc.builtin import checks
from normalizer_svc.builtin.findings import FindingDraft, InvalidModelOutput
from normalizer_svc.builtin.model_input import ModelInputLike
from normalizer_svc.geometry import box_center_mm, has_geometry

MASS_LABEL, MASS_CODE = "Breast mass candidate", "SCT:4147007"  # SNOMED CT "Mass"
SUSPICION_LABEL = "Mammographic mass suspicion"


def merge_view_outputs(per_image: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenates per-image model outputs (in model-input order) into one outputs dict."""
    boxes = [checks.output(out, "BOXES", 2, (4,)) for out in per_image]
    return {
        "BOXES": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        "SCORES": np.concatenate([np.asarray(out["SCORES"]).reshape(-1) for out in per_image])
        if per_image
        else np.zeros((0,), np.float32),
        "IMAGE_INDEX": np.concatenate(
            [np.full(len(b), i, dtype=np.int32) for i, b in enumerate(boxes)]
        )
        if boxes
        else np.zeros((0,), np.int32),
        "SUSPICION": np.concatenate([checks.output(out, "SUSPICION", 1, (1,)) for out in per_image])
        if per_image
        else np.zeros((0,), np.float32),
    }


def _view(model_input: ModelInputLike, index: int) -> str:
    return f"{model_input.laterality[index]} {model_input.view_position[index]}".strip()


def normalise(
    model_input: ModelInputLike,
    outputs: Mapping[str, np.ndarray],
    model_name: str,
    model_version: str,
) -> list[FindingDraft]:
    """One box finding per mass, then one classification finding for the study's suspicion."""
    images, rows, cols = np.asarray(model_input.volume).shape
    boxes = checks.output(outputs, "BOXES", 2, (4,)).astype(np.float64)
    confidences = checks.scores(outputs, "SCORES", boxes.shape[0])
    suspicion = checks.scores(outputs, "SUSPICION", np.asarray(outputs["SUSPICION"]).size)
    if "IMAGE_INDEX" in outputs:
        index = checks.output(outputs, "IMAGE_INDEX", 1).astype(np.int64)
    elif images == 1:
        index = np.zeros(boxes.shape[0], dtype=np.int64)
    else:
        raise InvalidModelOutput(f"{images} images but no IMAGE_INDEX for the boxes")
    if index.shape[0] != boxes.shape[0] or ((index < 0) | (index >= images)).any():
        raise InvalidModelOutput("IMAGE_INDEX does not match the boxes or the images")
    if suspicion.shape[0] != images:
        raise InvalidModelOutput(f"SUSPICION has {suspicion.shape[0]} values for {images} images")
    checks.within("BOXES", boxes[:, [1, 0]], boxes[:, [3, 2]], (rows, cols))
    row_mm, col_mm = (float(v) for v in model_input.pixel_spacing)
    geometric = has_geometry(model_input)
    findings = []
    for box, confidence, image in zip(boxes, confidences, index, strict=True):
        width_mm, height_mm = (box[2] - box[0] + 1) * col_mm, (box[3] - box[1] + 1) * row_mm
        diameter = (width_mm + height_mm) / 2
        view = _view(model_input, int(image))
        findings.append(
            FindingDraft(
                label=MASS_LABEL,
                code=MASS_CODE,
                confidence=float(confidence),
                kind="box",
                model_name=model_name,
                model_version=model_version,
                sop_instance_uid=str(model_input.sop_instance_uids[image]),
                frame=int(model_input.frames[image]),
                bbox_px=[float(v) for v in box],
                center_mm=box_center_mm(model_input, box, float(image)).tolist()
                if geometric
                else None,
                measurements={
                    "diameter_mm": round(float(diameter), 2),
                    "width_mm": round(float(width_mm), 2),
                    "height_mm": round(float(height_mm), 2),
                }
                if np.isfinite(diameter)
                else {},
                summary=(
                    f"Mass candidate, about {diameter:.0f} mm, {view or 'image ' + str(image + 1)}"
                    " (reference model, not for clinical use)"
                ),
                properties={"image_index": int(image), "view": view},
            )
        )
    if images:
        top = int(np.argmax(suspicion))
        findings.append(
            FindingDraft(
                label=SUSPICION_LABEL,
                code="",
                confidence=float(suspicion[top]),
                kind="classification",
                model_name=model_name,
                model_version=model_version,
                sop_instance_uid=str(model_input.sop_instance_uids[top]),
                frame=int(model_input.frames[top]),
                measurements={
                    f"suspicion_{_view(model_input, i) or i}".replace(" ", "_").lower(): round(
                        float(s), 4
                    )
                    for i, s in enumerate(suspicion)
                },
                summary=(
                    f"Highest mass suspicion {suspicion[top]:.2f} on "
                    f"{_view(model_input, top) or 'image ' + str(top + 1)} "
                    "(reference model, uncalibrated, not for clinical use)"
                ),
                properties={"image_index": top, "per_image": [float(s) for s in suspicion]},
            )
        )
    return findings
