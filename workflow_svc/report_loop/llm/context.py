"""The draft's context: reviewed findings in the radiologist's wording, de-identified."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core.store.models import Finding, Series, Study
from workflow_svc.report_loop.llm.deid import PROFILE, Deidentifier, age_band, sex

CONTEXT_VERSION = "sidecar-draft-context/2"  # /2: patient and request from dicom_attributes
DRAFTED = ("accepted", "edited")  # review statuses whose findings go into a draft


@dataclass(frozen=True)
class FindingFact:
    ref: str  # F1, F2, … : what the prompt and the reply call the finding
    finding_id: uuid.UUID
    label: str
    text: str
    status: str
    origin: str
    kind: str
    confidence: float
    model: str
    measurements: dict[str, Any]


@dataclass
class DraftContext:
    study_id: uuid.UUID
    deid: Deidentifier
    findings: list[FindingFact] = field(default_factory=list)
    content: dict[str, Any] = field(default_factory=dict)

    def finding_ids(self, refs: list[str]) -> list[str]:
        by_ref = {f.ref: str(f.finding_id) for f in self.findings}
        return [by_ref[r] for r in refs if r in by_ref]


def _dicom_date(value: Any) -> date | None:
    text = str(value or "").replace("-", "").strip()
    if len(text) == 8 and text.isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return None
    return None


async def build_context(s: AsyncSession, study: Study) -> DraftContext:
    """Accepted and edited findings (and the radiologist's own), measurements and patient
    characteristics, read from what ingest stores (`studies.dicom_attributes`). Structured
    fields are an allow-list; every free-text field passes the de-identifier."""
    attributes: dict[str, Any] = dict(study.dicom_attributes or {})
    deid = Deidentifier.for_study(str(study.id), attributes,
                                  extra=(study.accession, study.study_instance_uid))
    body_part = str(attributes.get("BodyPartExamined") or "") or (await s.execute(
        select(Series.body_part).where(Series.study_id == study.id, Series.body_part != "")
        .order_by(Series.series_number.asc().nulls_last()).limit(1))).scalar_one_or_none() or ""
    rows = (await s.execute(select(Finding).where(
        Finding.study_id == study.id, Finding.visible.is_(True)).order_by(
        Finding.created_at, Finding.id))).scalars().all()
    ctx = DraftContext(study.id, deid)
    for row in rows:
        current = dict(row.review_current or {})
        drafted = row.review_status in DRAFTED or (
            row.origin == "radiologist" and row.review_status not in ("rejected", "ignored"))
        if not drafted or current.get("include_in_draft") is False:
            continue
        ctx.findings.append(FindingFact(
            ref=f"F{len(ctx.findings) + 1}", finding_id=row.id,
            label=deid.text(str(current.get("label") or row.label)),
            text=deid.text(str(current.get("text") or row.summary or "")),
            status=row.review_status, origin=row.origin, kind=row.kind,
            confidence=round(float(row.confidence), 3), model=row.model_name,
            measurements={k: v for k, v in (row.measurements or {}).items()
                          if isinstance(v, int | float)}))
    study_date = _dicom_date(attributes.get("StudyDate"))
    ctx.content = {
        "context_version": CONTEXT_VERSION,
        "deidentification": PROFILE,
        "study": {"modality": study.modality,
                  "description": deid.text(str(attributes.get("StudyDescription")
                                               or study.description or "")),
                  "requested_procedure": deid.text(
                      str(attributes.get("RequestedProcedureDescription") or "")),
                  "reason": deid.text(str(attributes.get("ReasonForTheRequestedProcedure")
                                          or "")),
                  "date_shifted": deid.date(study_date),
                  "body_part": deid.text(body_part)},
        "patient": {"sex": sex(attributes.get("PatientSex")),
                    "age_years": age_band(str(attributes.get("PatientAge") or ""),
                                          _dicom_date(attributes.get("PatientBirthDate")),
                                          study_date)},
        "findings": [{"ref": f.ref, "label": f.label, "radiologist_text": f.text,
                      "review": f.status, "origin": f.origin, "kind": f.kind,
                      "confidence": f.confidence, "measurements": f.measurements}
                     for f in ctx.findings],
        # prior reports: the sidecar keeps no report text yet (see docs/readme/report-loop.md)
        "prior_reports": [],
    }
    return ctx
