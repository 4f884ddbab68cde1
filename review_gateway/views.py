"""JSON shapes of the gateway API, built from WorkflowService messages."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb

API = "/api/v1"


def iso(ts: timestamp_pb2.Timestamp, present: bool = True) -> str | None:
    """ISO-8601 UTC with a Z suffix; None when the timestamp is unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def study_json(study: pb.Study) -> dict[str, Any]:
    return {
        "id": study.study_id,
        "study_instance_uid": study.study_instance_uid,
        "accession": study.accession,
        "facility": study.facility,
        "modality": study.modality,
        "state": study.state,
        "eligibility": {"eligible": study.eligibility.eligible,
                        "reason": study.eligibility.reason},
        "received_at": iso(study.received_at, study.HasField("received_at")),
        "partial": study.partial,
        "ai_status": study.ai_status,
    }


def asset_url(study_id: str, asset_id: str) -> str:
    return f"{API}/studies/{study_id}/assets/{asset_id}"


def _first(series: pb.Series, kind: str) -> pb.Asset | None:
    return next((a for a in series.assets if a.kind == kind), None)


def series_json(study_id: str, series: pb.Series) -> dict[str, Any]:
    urls = {}
    for kind in ("thumbnail", "preview", "model_input"):
        asset = _first(series, kind)
        urls[f"{kind}_url"] = asset_url(study_id, asset.asset_id) if asset else None
    slices = f"{API}/studies/{study_id}/series/{series.series_id}/slices/{{slice}}"
    return {
        "id": series.series_id,
        "series_instance_uid": series.series_instance_uid,
        "modality": series.modality,
        "description": series.description,
        "body_part": series.body_part,
        "instance_count": series.instance_count,
        "slice_count": series.slice_count,
        "preprocess_status": series.preprocess_status,
        "derived": series.derived,
        **urls,
        "viewport_url_template": f"{slices}/viewport/{{preset}}",
        "presets": list(series.presets),
        "overlay_url_template": f"{slices}/overlay/{{preset}}",
    }


def finding_json(finding: common_pb2.Finding, state: pb.FindingState | None) -> dict[str, Any]:
    kind = common_pb2.FindingKind.Name(finding.kind).removeprefix("FINDING_KIND_").lower()
    return {
        "id": finding.finding_id,
        "label": finding.label,
        "code": finding.code,
        "confidence": finding.confidence,
        "kind": kind,
        "model": {"name": finding.model_name, "version": finding.model_version},
        "ai_run_id": finding.ai_run_id,
        "series_instance_uid": finding.series_instance_uid,
        "sop_instance_uid": finding.sop_instance_uid,
        "frame": finding.frame,
        "bbox_px": list(finding.bbox_px) or None,
        "center_mm": list(finding.center_mm) or None,
        "points_px": list(finding.points_px),
        "measurements": {m.name: m.value for m in finding.measurements},
        "summary": finding.summary,
        "review_status": state.review_status if state is not None else "",
        "slice_index": state.slice_index if state is not None else -1,
        "series_id": (state.series_id or None) if state is not None else None,
    }


def _whole_numbers(value: Any) -> Any:
    """Struct stores every number as a double; gives integral ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def audit_json(event: pb.AuditEvent) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "type": event.type,
        "at": iso(event.at, event.HasField("at")),
        "actor": event.actor,
        "job_id": event.job_id,
        "attempt": event.attempt,
        "error_class": event.error_class,
        "error_message": event.error_message,
        "context": _whole_numbers(json_format.MessageToDict(event.context)),
    }
