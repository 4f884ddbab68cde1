"""JSON shapes of the review API (docs/review-api.md), built from ReviewService messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.review import workflow_views as views


def study_json(row: rpb.WorklistStudy) -> dict[str, Any]:
    study, patient = row.study, row.patient
    return {
        "id": study.study_id,
        "study_instance_uid": study.study_instance_uid,
        "accession": study.accession,
        "facility": study.facility,
        "modality": study.modality,
        "description": study.description,
        "study_date": row.study_date or None,
        "received_at": views.iso(study.received_at, study.HasField("received_at")),
        "state": study.state,
        "ai_status": row.review_ai_status,
        "finding_count": row.finding_count,
        "max_confidence": row.max_confidence if row.HasField("max_confidence") else None,
        "assigned_to": row.assigned_to or None,
        "eligibility": {"eligible": study.eligibility.eligible,
                        "reason": study.eligibility.reason},
        "partial": study.partial,
        "patient": {"name": patient.name, "name_ideographic": patient.name_ideographic,
                    "name_phonetic": patient.name_phonetic, "id": patient.id,
                    "sex": patient.sex, "birth_date": patient.birth_date or None,
                    "age": patient.age or None},
        "referring_physician": row.referring_physician,
        "body_part": row.body_part,
    }


def event_json(row: rpb.WorklistStudy) -> dict[str, Any]:
    """The data of an SSE `study` event."""
    full = study_json(row)
    return {k: full[k] for k in ("id", "state", "ai_status", "finding_count", "max_confidence",
                                 "assigned_to")}


def detail_json(reply: rpb.GetStudyDetailResponse) -> dict[str, Any]:
    study_id = reply.study.study.study_id
    return {
        **study_json(reply.study),
        "state_history": [
            {"state": t.state, "at": views.iso(t.at, t.HasField("at")),
             "from_state": t.from_state or None, "actor": t.actor, "reason": t.reason}
            for t in reply.state_history],
        "series": [views.series_json(study_id, s) for s in reply.series],
    }


def finding_json(item: rpb.ReviewFinding) -> dict[str, Any]:
    body = views.finding_json(item.finding, item.state)
    radiologist = item.origin == "radiologist"
    decision = None
    if item.HasField("decision"):
        d = item.decision
        decision = {"action": d.action, "reason": d.reason or None, "note": d.note or None,
                    "by": d.by, "at": views.iso(d.at, d.HasField("at"))}
    body.update({
        "ai_run_id": item.finding.ai_run_id or None,
        "confidence": None if radiologist else item.finding.confidence,
        "model": None if radiologist else body["model"],
        "origin": item.origin,
        "below_threshold": item.below_threshold,
        "version": item.version,
        "decision": decision,
        "current": {"label": item.current.label, "bbox_px": list(item.current.bbox_px) or None,
                    "text": item.current.text,
                    "include_in_draft": item.current.include_in_draft},
    })
    return body


def history_json(event: rpb.ReviewHistoryEvent) -> dict[str, Any]:
    details = views._whole_numbers(json_format.MessageToDict(event.details))
    return {**details, "id": event.event_id, "action": event.action, "by": event.by,
            "at": views.iso(event.at, event.HasField("at")), "version": event.version}
