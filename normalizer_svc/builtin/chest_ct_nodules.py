"""Built-in normaliser of the chest_ct_nodules reference model: one box finding per nodule."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from normalizer_svc.builtin import checks
from normalizer_svc.builtin.findings import FindingDraft, InvalidModelOutput
from normalizer_svc.builtin.model_input import ModelInputLike
from normalizer_svc.geometry import box3d_center_voxel, has_geometry, voxel_to_patient

LABEL, CODE = "Lung nodule candidate", "SCT:27925004"  # SNOMED CT "Nodule"


def normalise(
    model_input: ModelInputLike,
    outputs: Mapping[str, np.ndarray],
    model_name: str,
    model_version: str,
) -> list[FindingDraft]:
    """BOXES [N, 6] (z0, y0, x0, z1, y1, x1) + SCORES [N] → box findings on the centre slice."""
    boxes = checks.output(outputs, "BOXES", 2, (6,)).astype(np.float64)
    confidences = checks.scores(outputs, "SCORES", boxes.shape[0])
    depth, rows, cols = np.asarray(model_input.volume).shape
    checks.within("BOXES", boxes[:, :3], boxes[:, 3:], (depth, rows, cols))
    row_mm, col_mm = (float(v) for v in model_input.pixel_spacing)
    slice_mm = float(model_input.slice_spacing) if np.isfinite(model_input.slice_spacing) else 0.0
    geometric = has_geometry(model_input)
    findings = []
    for box, confidence in zip(boxes, confidences, strict=True):
        x, y, z = box3d_center_voxel(box)
        key = int(np.clip(np.floor(z + 0.5), 0, depth - 1))
        extent = {
            "extent_x_mm": (box[5] - box[2] + 1) * col_mm,
            "extent_y_mm": (box[4] - box[1] + 1) * row_mm,
            "extent_z_mm": (box[3] - box[0] + 1) * slice_mm,
        }
        if not all(np.isfinite(v) for v in extent.values()):
            raise InvalidModelOutput("pixel spacing missing: nodule size cannot be measured")
        diameter = max(extent["extent_x_mm"], extent["extent_y_mm"])
        volume_ml = np.pi / 6 * np.prod(list(extent.values())) / 1000.0
        center = voxel_to_patient(model_input, x, y, z).tolist() if geometric else None
        findings.append(
            FindingDraft(
                label=LABEL,
                code=CODE,
                confidence=float(confidence),
                kind="box",
                model_name=model_name,
                model_version=model_version,
                sop_instance_uid=str(model_input.sop_instance_uids[key]),
                frame=int(model_input.frames[key]),
                bbox_px=[float(box[2]), float(box[1]), float(box[5]), float(box[4])],
                center_mm=center,
                measurements={
                    "diameter_mm": round(float(diameter), 2),
                    "volume_ml": round(float(volume_ml), 4),
                    **{k: round(float(v), 2) for k, v in extent.items()},
                },
                summary=(
                    f"Nodule candidate, {diameter:.1f} mm, slice {key + 1} of {depth} "
                    f"(reference model, not for clinical use)"
                ),
                properties={"slice_index": key, "box_zyx": [float(v) for v in box]},
            )
        )
    return findings
