"""Shapes of the review API (docs/review-api.md), built from ReviewService messages."""

from __future__ import annotations

from typing import cast

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.review import models
from review_gateway.review.workflow_views import finding_kind, iso, series_json, struct_json


def study_json(row: rpb.WorklistStudy) -> models.Study:
    study, patient = row.study, row.patient
    return models.Study(
        id=study.study_id,
        study_instance_uid=study.study_instance_uid,
        accession=study.accession,
        facility=study.facility,
        modality=study.modality,
        description=study.description,
        study_date=row.study_date or None,
        received_at=iso(study.received_at, study.HasField("received_at")),
        state=study.state,
        ai_status=row.review_ai_status,
        finding_count=row.finding_count,
        max_confidence=row.max_confidence if row.HasField("max_confidence") else None,
        assigned_to=row.assigned_to or None,
        eligibility=models.Eligibility(eligible=study.eligibility.eligible,
                                       reason=study.eligibility.reason),
        partial=study.partial,
        patient=models.Patient(
            name=patient.name, name_ideographic=patient.name_ideographic,
            name_phonetic=patient.name_phonetic, id=patient.id, sex=patient.sex,
            birth_date=patient.birth_date or None, age=patient.age or None),
        referring_physician=row.referring_physician,
        body_part=row.body_part,
    )


def event_json(row: rpb.WorklistStudy) -> models.StudyEvent:
    """The data of an SSE `study` event."""
    full = study_json(row)
    return models.StudyEvent(id=full.id, state=full.state, ai_status=full.ai_status,
                             finding_count=full.finding_count,
                             max_confidence=full.max_confidence, assigned_to=full.assigned_to)


def detail_json(reply: rpb.GetStudyDetailResponse) -> models.StudyDetail:
    study_id = reply.study.study.study_id
    return models.StudyDetail(
        **dict(study_json(reply.study)),
        state_history=[
            models.StateChange(state=t.state, at=iso(t.at, t.HasField("at")),
                               from_state=t.from_state or None, actor=t.actor, reason=t.reason)
            for t in reply.state_history],
        series=[series_json(study_id, s) for s in reply.series],
    )


def finding_json(item: rpb.ReviewFinding) -> models.Finding:
    finding, state = item.finding, item.state
    radiologist = item.origin == "radiologist"
    decision = None
    if item.HasField("decision"):
        d = item.decision
        decision = models.Decision(action=d.action, reason=d.reason or None, note=d.note or None,
                                   by=d.by, at=iso(d.at, d.HasField("at")))
    return models.Finding(
        id=finding.finding_id,
        label=finding.label,
        code=finding.code,
        confidence=None if radiologist else finding.confidence,
        kind=finding_kind(finding),
        model=None if radiologist else models.ModelRef(name=finding.model_name,
                                                       version=finding.model_version),
        ai_run_id=finding.ai_run_id or None,
        series_instance_uid=finding.series_instance_uid,
        sop_instance_uid=finding.sop_instance_uid,
        frame=finding.frame,
        bbox_px=list(finding.bbox_px) or None,
        center_mm=list(finding.center_mm) or None,
        points_px=list(finding.points_px),
        measurements={m.name: m.value for m in finding.measurements},
        summary=finding.summary,
        review_status=state.review_status,
        slice_index=state.slice_index,
        series_id=state.series_id or None,
        origin=cast(models.Origin, item.origin),  # validated by the model
        below_threshold=item.below_threshold,
        version=item.version,
        decision=decision,
        current=models.CurrentFinding(
            label=item.current.label, bbox_px=list(item.current.bbox_px) or None,
            text=item.current.text, include_in_draft=item.current.include_in_draft),
    )


def history_json(event: rpb.ReviewHistoryEvent) -> models.HistoryEvent:
    details = struct_json(event.details)
    return models.HistoryEvent(**{**details, "id": event.event_id, "action": event.action,
                                  "by": event.by, "at": iso(event.at, event.HasField("at")),
                                  "version": event.version})
