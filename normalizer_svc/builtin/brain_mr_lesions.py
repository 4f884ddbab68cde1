"""Built-in normaliser of the brain_mr_lesions reference model: one mask finding per lesion."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from normalizer_svc.builtin import checks
from normalizer_svc.builtin.findings import FindingDraft, InvalidModelOutput
from normalizer_svc.builtin.labelling import label
from normalizer_svc.builtin.model_input import ModelInputLike
from normalizer_svc.geometry import has_geometry, voxel_to_patient, voxel_volume_ml

LABEL, CODE = "Hyperintense brain lesion", "SCT:52988006"  # SNOMED CT "Lesion"
# The model gives a mask, no probabilities: every lesion gets this fixed, uncalibrated value.
MASK_CONFIDENCE = 0.5


def normalise(
    model_input: ModelInputLike,
    outputs: Mapping[str, np.ndarray],
    model_name: str,
    model_version: str,
) -> list[FindingDraft]:
    """MASK [Z, Y, X] → one mask finding per 6-connected lesion, with its volume in ml."""
    mask = checks.output(outputs, "MASK", 3)
    volume_shape = tuple(np.asarray(model_input.volume).shape)
    if mask.shape != volume_shape:
        raise InvalidModelOutput(f"MASK shape {list(mask.shape)} != volume {list(volume_shape)}")
    if not np.isin(mask, (0, 1)).all():
        raise InvalidModelOutput("MASK holds values other than 0 and 1")
    labels, count = label(mask.astype(bool), connectivity=1)
    voxel_ml = (
        voxel_volume_ml(model_input, float(model_input.slice_spacing))
        if np.isfinite(model_input.slice_spacing)
        else float("nan")
    )
    geometric = has_geometry(model_input)
    findings = []
    for lesion in range(1, count + 1):
        component = labels == lesion
        zs, ys, xs = np.nonzero(component)
        key = int(np.argmax(np.bincount(zs, minlength=volume_shape[0])))
        on_key = component[key]
        key_rows, key_cols = np.nonzero(on_key)
        volume_ml = zs.size * voxel_ml
        center = (
            voxel_to_patient(model_input, xs.mean(), ys.mean(), zs.mean()).tolist()
            if geometric
            else None
        )
        findings.append(
            FindingDraft(
                label=LABEL,
                code=CODE,
                confidence=MASK_CONFIDENCE,
                kind="mask",
                model_name=model_name,
                model_version=model_version,
                sop_instance_uid=str(model_input.sop_instance_uids[key]),
                frame=int(model_input.frames[key]),
                bbox_px=[
                    float(key_cols.min()),
                    float(key_rows.min()),
                    float(key_cols.max()),
                    float(key_rows.max()),
                ],
                center_mm=center,
                measurements={
                    "volume_ml": round(float(volume_ml), 4),
                    "voxels": float(zs.size),
                    "slices": float(np.unique(zs).size),
                }
                if np.isfinite(volume_ml)
                else {"voxels": float(zs.size), "slices": float(np.unique(zs).size)},
                summary=(
                    f"Hyperintense lesion, {volume_ml:.2f} ml over {np.unique(zs).size} slices "
                    "(reference model, not for clinical use)"
                ),
                mask=component,
                properties={"slice_index": key},
            )
        )
    return findings
