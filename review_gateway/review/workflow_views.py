"""Shapes of the gateway API built from WorkflowService messages (series, findings, audit)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from review_gateway.review import models

API = "/api/v1"


def iso(ts: timestamp_pb2.Timestamp, present: bool = True) -> str | None:
    """ISO-8601 UTC with a Z suffix; None when the timestamp is unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def asset_url(study_id: str, asset_id: str) -> str:
    return f"{API}/studies/{study_id}/assets/{asset_id}"


def _first(series: pb.Series, kind: str) -> pb.Asset | None:
    return next((a for a in series.assets if a.kind == kind), None)


def _url(study_id: str, series: pb.Series, kind: str) -> str | None:
    asset = _first(series, kind)
    return asset_url(study_id, asset.asset_id) if asset else None


def series_json(study_id: str, series: pb.Series) -> models.Series:
    slices = f"{API}/studies/{study_id}/series/{series.series_id}/slices/{{slice}}"
    return models.Series(
        id=series.series_id,
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        description=series.description,
        body_part=series.body_part,
        instance_count=series.instance_count,
        slice_count=series.slice_count,
        preprocess_status=series.preprocess_status,
        derived=series.derived,
        thumbnail_url=_url(study_id, series, "thumbnail"),
        preview_url=_url(study_id, series, "preview"),
        model_input_url=_url(study_id, series, "model_input"),
        viewport_url_template=f"{slices}/viewport/{{preset}}",
        presets=list(series.presets),
        overlay_url_template=f"{slices}/overlay/{{preset}}",
    )


def finding_kind(finding: common_pb2.Finding) -> str:
    return common_pb2.FindingKind.Name(finding.kind).removeprefix("FINDING_KIND_").lower()


def _whole_numbers(value: Any) -> Any:
    """Struct stores every number as a double; gives integral ones back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def struct_json(value: Any) -> Any:
    """A google.protobuf.Struct as JSON, integral numbers as ints."""
    return _whole_numbers(json_format.MessageToDict(value))


def audit_json(event: pb.AuditEvent) -> models.AuditEvent:
    return models.AuditEvent(
        id=event.event_id,
        type=event.type,
        at=iso(event.at, event.HasField("at")),
        actor=event.actor,
        job_id=event.job_id,
        attempt=event.attempt,
        error_class=event.error_class,
        error_message=event.error_message,
        context=struct_json(event.context),
    )
