"""Builds eligibility facts of a study from the metadata index (instances' indexed attributes)."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core.store.models import Instance, Series, Study
from workflow_svc.study.eligibility import SeriesFacts, StudyFacts


def slice_spacing(attrs: list[dict[str, Any]]) -> float | None:
    """Median distance between consecutive slice positions along the slice normal."""
    points: list[float] = []
    for a in attrs:
        ipp, iop = a.get("ImagePositionPatient"), a.get("ImageOrientationPatient")
        if not (
            isinstance(ipp, list) and isinstance(iop, list) and len(ipp) == 3 and len(iop) == 6
        ):
            continue
        r, c = iop[:3], iop[3:]
        n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        points.append(sum(float(p) * q for p, q in zip(ipp, n, strict=True)))
    if len(points) < 2:
        return None
    points.sort()
    gaps = sorted(b - a for a, b in zip(points, points[1:], strict=False) if b - a > 1e-3)
    if not gaps:
        return None
    return gaps[len(gaps) // 2] if math.isfinite(gaps[len(gaps) // 2]) else None


def frames_of(attrs: dict[str, Any]) -> int:
    try:
        return max(1, int(attrs.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


async def study_facts(
    session: AsyncSession, study: Study
) -> tuple[StudyFacts, list[SeriesFacts], dict[str, uuid.UUID]]:
    """Facts for eligibility plus a map series UID → series id."""
    series_rows = (
        (await session.execute(select(Series).where(Series.study_id == study.id))).scalars().all()
    )
    inst = (
        await session.execute(
            select(Instance.series_id, Instance.attributes).where(Instance.study_id == study.id)
        )
    ).all()
    by_series: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for series_id, attrs in inst:
        by_series[series_id].append(attrs or {})
    facts = []
    for s in series_rows:
        attrs = by_series.get(s.id, [])
        first = attrs[0] if attrs else {}
        count = sum(frames_of(a) for a in attrs)
        facts.append(
            SeriesFacts.from_attributes(s.series_instance_uid, first, count, slice_spacing(attrs))
        )
    modalities = tuple(sorted({s.modality.upper() for s in series_rows if s.modality}))
    study_facts_ = StudyFacts(study.study_instance_uid, study.description, modalities)
    return study_facts_, facts, {s.series_instance_uid: s.id for s in series_rows}
