"""Per-finding review decisions: append-only events, the latest superseding, optimistic versions."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.events.v1 import review_events_pb2
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from sidecar_core.messaging import outbox
from sidecar_core.messaging.subjects import REVIEW_CHANGED, Topology
from sidecar_core.store.models import Finding, Instance, ReviewEvent, User
from sidecar_core.store.models import Study as StudyRow
from workflow_svc.identity.access import SEES_ALL, Caller
from workflow_svc.review.worklist import load_row
from workflow_svc.study import queries, states

REJECT_REASONS = ("false_positive", "wrong_location", "clinically_insignificant", "artifact",
                  "other")
# action → (audit event, review status it sets; None: the verdict stays)
ACTIONS: dict[str, tuple[str, str | None]] = {
    "accept": ("review.finding_accepted", "accepted"),
    "reject": ("review.finding_rejected", "rejected"),
    "edit_geometry": ("review.finding_edited", "edited"),
    "edit_text": ("review.finding_edited", "edited"),
    "relabel": ("review.finding_relabelled", "edited"),
    "ignore": ("review.finding_ignored", "ignored"),
    "include_in_draft": ("review.finding_included_in_draft", None),
    "exclude_from_draft": ("review.finding_excluded_from_draft", None),
}
_MAX_TEXT = 4000
# The `action` of a REVIEW_CHANGED message (what ohif-sr's SR writer names the change).
_CHANGE = {"accept": "accepted", "reject": "rejected", "relabel": "relabelled",
           "ignore": "ignored", "add": "added"}


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bbox(values: Any) -> list[float]:
    box = [float(v) for v in values]
    if len(box) != 4 or not all(math.isfinite(v) and v >= 0 for v in box) \
            or box[0] >= box[2] or box[1] >= box[3]:
        raise InvalidArgument("INVALID_BBOX", "bbox_px must be [x_min, y_min, x_max, y_max] in "
                              "pixels with x_min < x_max and y_min < y_max")
    return box


def _label(value: str) -> str:
    label = value.strip()
    if not 0 < len(label) <= 128:
        raise InvalidArgument("INVALID_LABEL", "label must be 1 to 128 characters")
    return label


def _text(value: str, what: str = "text") -> str:
    if len(value) > _MAX_TEXT:
        raise InvalidArgument(f"INVALID_{what.upper()}", f"{what} must be at most "
                              f"{_MAX_TEXT} characters")
    return value


def finding_pb(row: Finding, slices: dict[tuple[str, int], tuple[int, str]]) -> rpb.ReviewFinding:
    """The finding as the review app sees it: AI values, the radiologist's, the latest verdict."""
    finding = queries._finding_pb(row)
    finding.ai_run_id = str(row.ai_run_id) if row.ai_run_id else ""
    index, series = slices.get((row.sop_instance_uid, row.frame or 1), (-1, ""))
    current = row.review_current or {}
    out = rpb.ReviewFinding(
        finding=finding, origin=row.origin or "ai", version=row.review_version or 0,
        state=pb.FindingState(finding_id=str(row.id), review_status=row.review_status or "",
                              visible=bool(row.visible), slice_index=index, series_id=series),
        current=rpb.CurrentFinding(
            label=str(current.get("label", row.label)),
            bbox_px=[float(v) for v in current.get("bbox_px", row.bbox_px or [])],
            text=str(current.get("text", row.summary or "")),
            include_in_draft=bool(current.get("include_in_draft", False))))
    decision = current.get("decision")
    if decision:
        out.decision.CopyFrom(rpb.Decision(action=decision.get("action", ""),
                                           reason=decision.get("reason", ""),
                                           note=decision.get("note", ""),
                                           by=decision.get("by", "")))
        out.decision.at.FromDatetime(datetime.fromisoformat(decision["at"].replace("Z",
                                                                                   "+00:00")))
    return out


async def _findings(session: AsyncSession, study_id: uuid.UUID,
                    finding_id: uuid.UUID | None = None, include_hidden: bool = False
                    ) -> list[rpb.ReviewFinding]:
    query = select(Finding).where(Finding.study_id == study_id)
    if not include_hidden:
        query = query.where(Finding.visible.is_(True))
    if finding_id is not None:
        query = query.where(Finding.id == finding_id)
    rows = (await session.scalars(query.order_by(Finding.created_at, Finding.id))).all()
    slices = await queries._key_slices(session, study_id, rows)
    return [finding_pb(r, slices) for r in rows]


async def list_findings(db: Database, study_id: str, caller: Caller,
                        include_hidden: bool = False) -> list[rpb.ReviewFinding]:
    """Visible findings of a study the caller may see, AI and radiologist's, oldest first;
    shadow-mode (hidden) ones too on request, for admins and auditors only."""
    if include_hidden and caller.role not in SEES_ALL:
        raise PermissionDenied("HIDDEN_FINDINGS_FORBIDDEN",
                               "only admins and auditors may see findings hidden by shadow mode")
    async with db.read() as s:
        row = await load_row(s, study_id, caller)
        return await _findings(s, uuid.UUID(row.study.study_id), include_hidden=include_hidden)


async def _event(s: AsyncSession, topology: Topology, ref: StudyRef, finding: Finding,
                 action: str, version: int, payload: dict[str, Any], caller: Caller,
                 request_id: str, audit_type: str) -> None:
    """The append-only review event, its audit event and the REVIEW_CHANGED bus message."""
    event = ReviewEvent(id=uuid.uuid4(), study_id=finding.study_id, finding_id=finding.id,
                        ai_run_id=finding.ai_run_id, user_id=caller.user_uuid, action=action,
                        payload=payload, request_id=request_id or None, version=version,
                        model_name=finding.model_name, model_version=finding.model_version)
    s.add(event)
    await s.flush()
    await audit.record(s, topology, audit_type, caller.actor, ref, context={
        "finding_id": str(finding.id), "ai_run_id": str(finding.ai_run_id or ""),
        "model": finding.model_name, "model_version": finding.model_version,
        "action": action, "version": version, "review_event_id": str(event.id),
        **{k: payload[k] for k in ("reason", "label", "bbox_px") if k in payload},
        **caller.audit_context()})
    message = review_events_pb2.ReviewChanged(
        study_id=str(finding.study_id), finding_ids=[str(finding.id)],
        ai_run_ids=[str(finding.ai_run_id)] if finding.ai_run_id else [],
        action=_CHANGE.get(action, "edited"), review_event_id=str(event.id))
    await outbox.enqueue(s, topology.subject(REVIEW_CHANGED), str(event.id), message)


def _apply(request: rpb.DecideFindingRequest, finding: Finding, current: dict[str, Any],
           caller: Caller, now: datetime) -> dict[str, Any]:
    """Validates the decision and returns its payload; updates `current` in place."""
    action = request.action
    payload: dict[str, Any] = {}
    if action == "reject":
        if request.reason not in REJECT_REASONS:
            raise InvalidArgument("REASON_REQUIRED", "reject needs a reason: one of "
                                  f"{', '.join(REJECT_REASONS)}", given=request.reason[:64])
        payload["reason"] = request.reason
    if request.note:
        payload["note"] = _text(request.note, "note")
    if action == "edit_geometry":
        payload["bbox_px"] = current["bbox_px"] = _bbox(request.bbox_px)
        payload["previous_bbox_px"] = finding.bbox_px or []
    elif action == "edit_text":
        if not request.text.strip():
            raise InvalidArgument("TEXT_REQUIRED", "edit_text needs a text")
        payload["text"] = current["text"] = _text(request.text)
    elif action == "relabel":
        payload["label"] = current["label"] = _label(request.label)
    elif action in ("include_in_draft", "exclude_from_draft"):
        current["include_in_draft"] = action == "include_in_draft"
    if ACTIONS[action][1] is not None:
        current["decision"] = {"action": action, "reason": payload.get("reason", ""),
                               "note": payload.get("note", ""), "by": caller.username,
                               "at": _iso(now)}
    return payload


async def decide(db: Database, topology: Topology, request: rpb.DecideFindingRequest,
                 caller: Caller) -> rpb.ReviewFinding:
    """Applies one decision if `expected_version` is the finding's current version;
    FailedPrecondition(VERSION_CONFLICT) otherwise. A repeated request_id returns the finding."""
    caller.require_writer()
    if request.action not in ACTIONS:
        raise InvalidArgument("INVALID_ACTION", f"action must be one of {', '.join(ACTIONS)}",
                              action=request.action)
    fid = queries.parse_id(request.finding_id, "finding")
    async with db.unit_of_work() as s:
        row = await load_row(s, request.study_id, caller)
        sid = uuid.UUID(row.study.study_id)
        if request.request_id and await s.scalar(select(ReviewEvent.id).where(
                ReviewEvent.request_id == request.request_id, ReviewEvent.finding_id == fid)):
            return (await _findings(s, sid, fid))[0]
        finding = (await s.execute(select(Finding).where(
            Finding.id == fid, Finding.study_id == sid, Finding.visible.is_(True))
            .with_for_update())).scalar_one_or_none()
        if finding is None:
            raise NotFound("FINDING_NOT_FOUND", f"no finding {fid} in this study",
                           finding_id=str(fid))
        if request.expected_version != finding.review_version:
            raise FailedPrecondition(
                "VERSION_CONFLICT", f"the finding is at version {finding.review_version}, "
                f"not {request.expected_version}: reload it and decide again",
                finding_id=str(fid), current_version=finding.review_version)
        now = datetime.now(UTC)
        current = dict(finding.review_current or {})
        payload = _apply(request, finding, current, caller, now)
        version = finding.review_version + 1
        values: dict[str, Any] = {"review_version": version, "review_current": current}
        status = ACTIONS[request.action][1]
        if status is not None:
            values["review_status"] = status
        await s.execute(update(Finding).where(Finding.id == fid).values(**values))
        study = await s.get(StudyRow, sid)
        assert study is not None
        ref = await states.study_ref(s, study)
        await _event(s, topology, ref, finding, request.action, version, payload, caller,
                     request.request_id, ACTIONS[request.action][0])
        s.expire(finding)
        return (await _findings(s, sid, fid))[0]


async def add_finding(db: Database, topology: Topology, request: rpb.AddFindingRequest,
                      caller: Caller) -> rpb.ReviewFinding:
    """The radiologist's own finding (a box on one frame of an instance of the study)."""
    caller.require_writer()
    label, box, text = _label(request.label), _bbox(request.bbox_px), _text(request.text)
    frame = request.frame or 1
    if frame < 1:
        raise InvalidArgument("INVALID_FRAME", "frame numbers start at 1", frame=frame)
    async with db.unit_of_work() as s:
        row = await load_row(s, request.study_id, caller)
        sid = uuid.UUID(row.study.study_id)
        if request.request_id:
            done = await s.scalar(select(ReviewEvent.finding_id).where(
                ReviewEvent.request_id == request.request_id))
            if done is not None:
                return (await _findings(s, sid, done))[0]
        sop = await s.scalar(select(Instance.id).where(
            Instance.study_id == sid, Instance.sop_instance_uid == request.sop_instance_uid))
        if sop is None:
            raise InvalidArgument("UNKNOWN_INSTANCE", "sop_instance_uid is not an instance of "
                                  "this study", sop_instance_uid=request.sop_instance_uid[:64])
        now = datetime.now(UTC)
        current = {"label": label, "bbox_px": box, "text": text, "include_in_draft": True,
                   "decision": {"action": "add", "reason": "", "note": "",
                                "by": caller.username, "at": _iso(now)}}
        finding = Finding(id=uuid.uuid4(), ai_run_id=None, study_id=sid,
                          model_name="radiologist", model_version="", label=label,
                          confidence=1.0, kind="box",
                          series_instance_uid=request.series_instance_uid[:64],
                          sop_instance_uid=request.sop_instance_uid[:64], frame=frame,
                          bbox_px=box, summary=text, origin="radiologist",
                          review_status="accepted", review_version=1, review_current=current)
        s.add(finding)
        await s.flush()
        study = await s.get(StudyRow, sid)
        assert study is not None
        ref = await states.study_ref(s, study)
        await _event(s, topology, ref, finding, "add", 1,
                     {"label": label, "bbox_px": box, "text": text}, caller, request.request_id,
                     "review.finding_added")
        return (await _findings(s, sid, finding.id))[0]


async def history(db: Database, study_id: str, finding_id: str, caller: Caller
                  ) -> list[rpb.ReviewHistoryEvent]:
    """Every review event of a finding, oldest first (the superseded ones included)."""
    fid = queries.parse_id(finding_id, "finding")
    async with db.read() as s:
        row = await load_row(s, study_id, caller)
        sid = uuid.UUID(row.study.study_id)
        if await s.scalar(select(Finding.id).where(Finding.id == fid,
                                                   Finding.study_id == sid)) is None:
            raise NotFound("FINDING_NOT_FOUND", f"no finding {fid} in this study",
                           finding_id=str(fid))
        rows = (await s.execute(
            select(ReviewEvent, User.username).outerjoin(User, User.id == ReviewEvent.user_id)
            .where(ReviewEvent.finding_id == fid).order_by(ReviewEvent.at, ReviewEvent.version)
        )).all()
    out = []
    for event, username in rows:
        details = struct_pb2.Struct()
        details.update(audit.jsonable(event.payload or {}))
        item = rpb.ReviewHistoryEvent(event_id=str(event.id), action=event.action,
                                      by=username or "", version=event.version, details=details)
        item.at.FromDatetime(event.at)
        out.append(item)
    return out
