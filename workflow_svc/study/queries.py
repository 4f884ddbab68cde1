"""Read side of the workflow store: a study with history and series, audit and assets, scoped."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import ColumnElement, and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.store.models import (
    Asset,
    AuditEvent,
    Facility,
    Finding,
    Instance,
    Series,
    StateTransition,
)
from sidecar_core.store.models import Study as StudyRow

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
STATES = frozenset(
    name.removeprefix("STUDY_STATE_").lower()
    for name in common_pb2.StudyState.keys()  # noqa: SIM118 (enum wrapper, not a dict)
    if name != "STUDY_STATE_UNSPECIFIED"
)
_KINDS = frozenset(common_pb2.FindingKind.keys())


def parse_id(value: str, what: str = "study") -> uuid.UUID:
    """Parses a UUID argument; InvalidArgument(INVALID_<WHAT>_ID) when it is not one."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgument(f"INVALID_{what.upper()}_ID", f"{what} id must be a UUID",
                              **{f"{what}_id": str(value)[:64]}) from None


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must not be negative",
                              page_size=value)
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _scope(*parts: Any) -> str:
    """Fingerprint of a query, so a page token is only accepted by the query that issued it."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _encode_token(scope: str, values: list[Any]) -> str:
    raw = json.dumps({"s": scope, "v": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(token: str, scope: str, convert: Callable[[Any], Any]) -> tuple[datetime, Any] | None:
    """The (time, tiebreaker) keyset position a page token carries, or None for the first page."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] == scope:
            at_text, key = data["v"]
            at = datetime.fromisoformat(at_text)
            if at.tzinfo is not None:
                return at, convert(key)
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument("INVALID_PAGE_TOKEN",
                          "page_token is malformed or belongs to a different query")


def _ts(dt: datetime | None, target: Any) -> None:
    if dt is not None:
        target.FromDatetime(dt)


def _study_pb(row: StudyRow, facility: str) -> pb.Study:
    study = pb.Study(
        study_id=str(row.id), study_instance_uid=row.study_instance_uid, accession=row.accession,
        facility=facility, modality=row.modality or "", state=row.state or "",
        description=row.description or "", partial=bool(row.partial), ai_status=row.ai_status or "",
        eligibility=pb.Eligibility(eligible=bool(row.eligible), decided=row.eligible is not None,
                                   reason=row.eligibility_reason or "",
                                   models=_model_names(row.eligible_models)),
    )
    _ts(row.created_at, study.received_at)
    _ts(row.updated_at, study.updated_at)
    return study


def _asset_pb(row: Asset) -> pb.Asset:
    return pb.Asset(asset_id=str(row.id), kind=row.kind, content_type=row.content_type,
                    preset=row.preset or "", slice_index=row.slice_index, sha256=row.sha256,
                    sop_instance_uid=row.sop_instance_uid or "", frame=row.frame)


def _measurements(values: dict[str, Any] | None) -> list[common_pb2.Measurement]:
    """Stored as {name: value} or {name: {"value": v, "unit": u}}."""
    out = []
    for name, value in (values or {}).items():
        item = value if isinstance(value, dict) else {"value": value}
        if isinstance(item.get("value"), int | float):
            out.append(common_pb2.Measurement(name=name, value=float(item["value"]),
                                              unit=str(item.get("unit", ""))))
    return out


def _finding_pb(row: Finding) -> common_pb2.Finding:
    kind_name = f"FINDING_KIND_{row.kind.upper()}"
    return common_pb2.Finding(
        finding_id=str(row.id), ai_run_id=str(row.ai_run_id), model_name=row.model_name,
        model_version=row.model_version, label=row.label, code=row.code or "",
        confidence=row.confidence,
        kind=kind_name if kind_name in _KINDS else "FINDING_KIND_UNSPECIFIED",
        series_instance_uid=row.series_instance_uid or "",
        sop_instance_uid=row.sop_instance_uid or "",
        frame=row.frame, bbox_px=row.bbox_px or [], center_mm=row.center_mm or [],
        points_px=row.points_px or [], mask_object_key=row.mask_object_key or "",
        measurements=_measurements(row.measurements), summary=row.summary or "",
    )


def _audit_pb(row: AuditEvent) -> pb.AuditEvent:
    context = struct_pb2.Struct()
    context.update(row.context or {})
    event = pb.AuditEvent(
        event_id=str(row.id), type=row.type, actor=row.actor, job_id=row.job_id or "",
        attempt=row.attempt, error_class=row.error_class or "",
        error_message=row.error_message or "", context=context,
        study=common_pb2.StudyKey(facility=row.facility, accession=row.accession,
                                  study_instance_uid=row.study_instance_uid),
    )
    _ts(row.at, event.at)
    return event


def _in_scope(allowed: Sequence[str] | None) -> list[ColumnElement[bool]]:
    """The WHERE clause of facility scoping: None allows every facility (an explicit claim of
    the caller's token), an empty list none."""
    return [] if allowed is None else [Facility.name.in_(list(allowed))]


async def _load_study(session: AsyncSession, study_id: str,
                      allowed: Sequence[str] | None) -> tuple[StudyRow, str]:
    """The study if it exists and the caller may see it; NotFound alike in both other cases."""
    sid = parse_id(study_id)
    query = (select(StudyRow, Facility.name)
             .join(Facility, Facility.id == StudyRow.facility_id)
             .where(StudyRow.id == sid, *_in_scope(allowed)))
    row = (await session.execute(query)).one_or_none()
    if row is None:
        raise NotFound("STUDY_NOT_FOUND", f"no study {sid}", study_id=str(sid))
    return row[0], row[1]


async def visible_study_id(session: AsyncSession, study_id: str,
                           allowed: Sequence[str] | None) -> uuid.UUID:
    """The id of a study in the caller's scope; NotFound alike when absent or out of scope."""
    study, _ = await _load_study(session, study_id, allowed)
    return study.id


@dataclass
class StudyDetail:
    """A study, its state history (oldest first) and its series with their assets."""

    study: pb.Study
    state_history: list[pb.StateTransition] = field(default_factory=list)
    series: list[pb.Series] = field(default_factory=list)


async def get_study(db: Database, study_id: str,
                    allowed_facilities: Sequence[str] | None) -> StudyDetail:
    """One study with its state history (oldest first) and its series with their assets."""
    async with db.read() as session:
        study, facility = await _load_study(session, study_id, allowed_facilities)
        transitions = (await session.scalars(
            select(StateTransition).where(StateTransition.study_id == study.id)
            .order_by(StateTransition.at, StateTransition.id))).all()
        series_rows = (await session.scalars(
            select(Series).where(Series.study_id == study.id)
            .order_by(Series.series_number.asc().nulls_last(), Series.created_at, Series.id)
        )).all()
        assets = (await session.scalars(
            select(Asset).where(Asset.study_id == study.id)
            .order_by(Asset.kind, Asset.preset, Asset.slice_index, Asset.created_at))).all()
        # Series holding the sidecar's own DICOM results (SR, SEG), apart from what was received.
        derived = set((await session.scalars(
            select(Instance.series_id).where(Instance.study_id == study.id,
                                             Instance.source == "derived").distinct())).all())
    response = StudyDetail(study=_study_pb(study, facility))
    for t in transitions:
        item = pb.StateTransition(from_state=t.from_state or "", state=t.to_state,
                                  actor=t.actor, reason=t.reason or "")
        _ts(t.at, item.at)
        response.state_history.append(item)
    for s in series_rows:
        own = [a for a in assets if a.series_id == s.id]
        presets = [str(p) for p in s.presets or []] or sorted(
            {a.preset for a in own if a.kind == "viewport" and a.preset})
        response.series.append(pb.Series(
            series_id=str(s.id), series_instance_uid=s.series_instance_uid,
            modality=s.modality or "", description=s.description or "",
            instance_count=s.instance_count, body_part=s.body_part or "",
            assets=[_asset_pb(a) for a in own], slice_count=s.slice_count, presets=presets,
            preprocess_status=s.preprocess_status or "", derived=s.id in derived,
        ))
    return response


async def _key_slices(session: AsyncSession, study_id: uuid.UUID, findings: Sequence[Finding]
                      ) -> dict[tuple[str, int], tuple[int, str]]:
    """(SOPInstanceUID, frame) of each finding's key slice → (slice index, series id), from the
    slice order the preprocess worker stores with each series before announcing its input."""
    sops = {f.sop_instance_uid for f in findings if f.sop_instance_uid}
    if not sops:
        return {}
    rows = (await session.execute(
        select(Series.id, Series.slice_refs)
        .where(Series.study_id == study_id, Series.slice_refs.is_not(None)))).all()
    out: dict[tuple[str, int], tuple[int, str]] = {}
    for series_id, refs in rows:
        for index, (sop, frame) in enumerate(refs or []):
            if sop in sops:
                out.setdefault((str(sop), int(frame or 1)), (index, str(series_id)))
    left = sops - {sop for sop, _ in out}
    if left:  # series preprocessed before the slice order was stored: their eager viewports
        rows = (await session.execute(
            select(Asset.sop_instance_uid, Asset.frame, Asset.slice_index, Asset.series_id)
            .where(Asset.study_id == study_id, Asset.kind == "viewport",
                   Asset.sop_instance_uid.in_(left)).distinct())).all()
        for sop, frame, index, series_id in rows:
            out.setdefault((sop, frame or 1), (index, str(series_id)))
    return out


async def list_audit_events(db: Database, study_id: str,
                            allowed_facilities: Sequence[str] | None, *, page_size: int = 0,
                            page_token: str = "") -> pb.ListAuditEventsResponse:
    """Audit events of a study (by id, or by study key when recorded before it had one), by time."""
    size = _page_size(page_size)
    scope = _scope("audit", study_id,
                   "*" if allowed_facilities is None else sorted(allowed_facilities))
    after = _after(page_token, scope, int)
    async with db.read() as session:
        study, facility = await _load_study(session, study_id, allowed_facilities)
        query = select(AuditEvent).where(or_(
            AuditEvent.study_id == study.id,
            and_(AuditEvent.study_id.is_(None), AuditEvent.facility == facility,
                 AuditEvent.accession == study.accession,
                 AuditEvent.study_instance_uid == study.study_instance_uid),
        ))
        if after is not None:
            query = query.where(tuple_(AuditEvent.at, AuditEvent.seq) > tuple_(after[0], after[1]))
        rows = (await session.scalars(
            query.order_by(AuditEvent.at, AuditEvent.seq).limit(size + 1))).all()
    response = pb.ListAuditEventsResponse(events=[_audit_pb(r) for r in rows[:size]])
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = _encode_token(scope, [last.at.isoformat(), int(last.seq)])
    return response


async def get_asset(db: Database, study_id: str, asset_id: str,
                    allowed_facilities: Sequence[str] | None, *, series_id: str = "",
                    kind: str = "", preset: str = "",
                    slice_index: int | None = None) -> pb.GetAssetResponse:
    """An asset of a study by id, or by series + kind + preset + slice; with its object key."""
    async with db.read() as session:
        study, _ = await _load_study(session, study_id, allowed_facilities)
        query = select(Asset).where(Asset.study_id == study.id)
        if asset_id:
            query = query.where(Asset.id == parse_id(asset_id, "asset"))
            what: dict[str, Any] = {"asset_id": asset_id}
        else:
            if not series_id or not kind:
                raise InvalidArgument("ASSET_SELECTOR_REQUIRED",
                                      "give asset_id, or series_id and kind")
            query = query.where(Asset.series_id == parse_id(series_id, "series"),
                                Asset.kind == kind, Asset.preset == preset,
                                Asset.slice_index == (-1 if slice_index is None else slice_index))
            what = {"series_id": series_id, "kind": kind, "preset": preset,
                    "slice_index": "" if slice_index is None else slice_index}
        row = (await session.scalars(query.order_by(Asset.created_at.desc()).limit(1))).first()
    if row is None:
        raise NotFound("ASSET_NOT_FOUND", "no such asset in this study", study_id=study_id, **what)
    return pb.GetAssetResponse(asset=_asset_pb(row), object_key=row.object_key)


def _model_names(planned: list[Any] | None) -> list[str]:
    """The covering models' names from the stored plan ({model, series_instance_uid} rows)."""
    return sorted({p["model"] if isinstance(p, dict) else str(p) for p in planned or []})
