"""The draft's context: reviewed findings in the radiologist's wording, de-identified."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core.secret_box import SecretBox, SecretKeyError
from sidecar_core.store.models import Facility, Finding, LegacyReport, Series, Study
from workflow_svc.report_loop.llm.deid import PROFILE, Deidentifier, age_band, sex
from workflow_svc.report_loop.report_text import open_text

# /2: patient and request from dicom_attributes; /3: the patient's prior reports (PRIOR-n)
CONTEXT_VERSION = "sidecar-draft-context/3"
# Prior reports: the look-back (days before the current study) and how many at most go into a
# context, newest first, when the facility sets neither (`prior_report_lookback_days`,
# `prior_report_max`; workflow_svc/operations/facility_settings.py).
PRIOR_LOOKBACK_DAYS = 1095
PRIOR_MAX = 5
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
    prior_refs: list[str] = field(default_factory=list)  # PRIOR-1, … : citable like F1
    prior_error: str = ""  # the prior-report lookup failed (the draft goes on without them)

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


class PriorLookupError(Exception):
    """The prior reports could not be read (a sealed text that does not open, no key)."""


@dataclass(frozen=True)
class PriorReport:
    accession: str
    reference: str
    on: date
    text: str


async def prior_reports(s: AsyncSession, study: Study, attributes: dict[str, Any],
                        box: SecretBox | None, lookback_days: int = PRIOR_LOOKBACK_DAYS,
                        limit: int = PRIOR_MAX) -> list[PriorReport]:
    """The patient's earlier reports at the study's facility: PID-3 (ID and assigning
    authority) equal to the study's PatientID and IssuerOfPatientID, of another accession,
    dated before the study and within the look-back; the latest report of each accession,
    newest first, at most `limit`. PriorLookupError when a text does not open."""
    patient_id = str(attributes.get("PatientID") or "").strip()
    if not patient_id:
        return []
    issuer = str(attributes.get("IssuerOfPatientID") or "").strip()
    current = _dicom_date(attributes.get("StudyDate")) or study.created_at.astimezone(UTC).date()
    since = datetime.combine(current - timedelta(days=lookback_days), datetime.min.time(), UTC)
    until = datetime.combine(current, datetime.min.time(), UTC)
    rows = (await s.execute(
        select(LegacyReport).where(
            LegacyReport.facility_id == study.facility_id,
            LegacyReport.patient_id == patient_id[:64],
            LegacyReport.patient_id_issuer == issuer[:64],
            LegacyReport.accession != study.accession,
            LegacyReport.report_text_enc.is_not(None),
            LegacyReport.completed_at >= since, LegacyReport.completed_at < until)
        .order_by(LegacyReport.completed_at.desc(), LegacyReport.created_at.desc())
        .limit(limit * 4))).scalars().all()
    latest: dict[str, LegacyReport] = {}
    for row in rows:
        latest.setdefault(row.accession, row)
    chosen = list(latest.values())[:limit]
    if chosen and box is None:
        raise PriorLookupError("no secret key is configured to open the report text")
    out = []
    for row in chosen:
        try:
            text = open_text(box, row.id, row.report_text_enc)  # type: ignore[arg-type]
        except SecretKeyError as exc:
            raise PriorLookupError(str(exc)) from None
        on = (row.observed_at or row.completed_at).astimezone(UTC).date()
        out.append(PriorReport(row.accession, row.report_reference, on, text))
    return out


async def build_context(s: AsyncSession, study: Study,
                        box: SecretBox | None = None) -> DraftContext:
    """Accepted and edited findings (and the radiologist's own), measurements and patient
    characteristics, read from what ingest stores (`studies.dicom_attributes`), and the
    patient's prior reports (opened with `box`). Structured fields are an allow-list; every
    free-text field passes the de-identifier. A failed prior lookup leaves the priors out and
    says why in `prior_error`."""
    attributes: dict[str, Any] = dict(study.dicom_attributes or {})
    prior_error = ""
    lookback, most = (await s.execute(select(
        Facility.prior_report_lookback_days, Facility.prior_report_max)
        .where(Facility.id == study.facility_id))).one_or_none() or (None, None)
    try:
        priors = await prior_reports(s, study, attributes, box,
                                     lookback_days=lookback or PRIOR_LOOKBACK_DAYS,
                                     limit=PRIOR_MAX if most is None else most)
    except PriorLookupError as exc:
        priors, prior_error = [], str(exc)
    deid = Deidentifier.for_study(str(study.id), attributes, extra=(
        study.accession, study.study_instance_uid,
        *(x for p in priors for x in (p.accession, p.reference))))
    body_part = str(attributes.get("BodyPartExamined") or "") or (await s.execute(
        select(Series.body_part).where(Series.study_id == study.id, Series.body_part != "")
        .order_by(Series.series_number.asc().nulls_last()).limit(1))).scalar_one_or_none() or ""
    rows = (await s.execute(select(Finding).where(
        Finding.study_id == study.id, Finding.visible.is_(True)).order_by(
        Finding.created_at, Finding.id))).scalars().all()
    ctx = DraftContext(study.id, deid, prior_error=prior_error)
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
        "prior_reports": [{"ref": f"PRIOR-{i}", "date": deid.date(p.on),
                           "accession": deid.text(p.accession), "text": deid.text(p.text)}
                          for i, p in enumerate(priors, start=1)],
    }
    ctx.prior_refs = [p["ref"] for p in ctx.content["prior_reports"]]
    return ctx
