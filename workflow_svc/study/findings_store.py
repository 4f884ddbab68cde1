"""Stores validated findings of an AI run (protobuf Finding → findings rows)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from sidecar_core.store.models import AiRun, Finding


def kind_name(kind: int) -> str:
    return common_pb2.FindingKind.Name(kind).removeprefix("FINDING_KIND_").lower()


async def store_findings(
    s: AsyncSession, run: AiRun, findings: Sequence[common_pb2.Finding], visible: bool,
    threshold: float = 0.0,
) -> int:
    """Stores every finding; those below `threshold` (the model's operating threshold) are
    hidden by default, as are all of a shadow run (`visible` False)."""
    for f in findings:
        s.add(
            Finding(
                id=uuid.UUID(f.finding_id) if f.finding_id else uuid.uuid4(),
                ai_run_id=run.id,
                study_id=run.study_id,
                model_name=f.model_name or run.model_name,
                model_version=f.model_version or run.model_version,
                label=f.label[:128],
                code=f.code[:64],
                confidence=f.confidence,
                kind=kind_name(f.kind),
                series_instance_uid=f.series_instance_uid,
                sop_instance_uid=f.sop_instance_uid,
                frame=f.frame or 1,
                bbox_px=list(f.bbox_px) or None,
                center_mm=list(f.center_mm) or None,
                points_px=list(f.points_px) or None,
                mask_object_key=f.mask_object_key,
                measurements={m.name: m.value for m in f.measurements},
                summary=f.summary,
                visible=visible and f.confidence >= threshold,
            )
        )
    return len(findings)
