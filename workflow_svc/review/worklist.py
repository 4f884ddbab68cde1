"""The worklist: scoped studies with patient, AI status, findings, assignee; filter, sort, page."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.store.models import Facility, Finding, Series, User
from sidecar_core.store.models import Study as StudyRow
from workflow_svc.identity.access import Caller
from workflow_svc.review.patient import patient_pb, person_name, study_date
from workflow_svc.study import queries

AI_STATUSES = ("pending", "findings", "no_findings", "failed")
SORTS = ("received_at", "study_date", "max_confidence")
_FINDING_SCOPE = (Finding.visible.is_(True), Finding.origin == "ai")

# Patient and study attributes of the study (studies.dicom_attributes, docs/readme/wado.md).
_attributes = StudyRow.dicom_attributes
_finding_count = (select(func.count()).select_from(Finding)
                  .where(Finding.study_id == StudyRow.id, *_FINDING_SCOPE)
                  .correlate(StudyRow).scalar_subquery())
_max_confidence = (select(func.max(Finding.confidence))
                   .where(Finding.study_id == StudyRow.id, *_FINDING_SCOPE)
                   .correlate(StudyRow).scalar_subquery())
_body_part = (select(Series.body_part).where(Series.study_id == StudyRow.id, Series.body_part != "")
              .order_by(Series.series_number.asc().nulls_last(), Series.created_at).limit(1)
              .correlate(StudyRow).scalar_subquery())
_assignee = (select(User.username).where(User.id == StudyRow.assigned_user_id)
             .correlate(StudyRow).scalar_subquery())
_ai_status = case(
    (StudyRow.ai_status == "failed", "failed"),
    (StudyRow.state == "ai_failed", "failed"),
    (StudyRow.ai_status.in_(("completed", "partial")),
     case((_finding_count > 0, "findings"), else_="no_findings")),
    else_="pending",
)
_study_date = _attributes["StudyDate"].astext


def _columns() -> Select[Any]:
    return (select(StudyRow, Facility.name, _attributes, _finding_count, _max_confidence,
                   _body_part, _assignee, _ai_status)
            .join(Facility, Facility.id == StudyRow.facility_id))


def _row_pb(row: Any) -> rpb.WorklistStudy:
    study, facility, attributes, count, max_conf, body_part, assignee, ai_status = row
    # merge point of review-api and wado: the per-study patient attributes (0005) win
    attributes = {**(attributes or {}), **(getattr(study, "dicom_attributes", None) or {})}
    out = rpb.WorklistStudy(
        study=queries._study_pb(study, facility), patient=patient_pb(attributes),
        study_date=study_date(attributes),
        referring_physician=_person(attributes.get("ReferringPhysicianName")),
        body_part=body_part or str(attributes.get("BodyPartExamined") or ""),
        finding_count=int(count or 0), assigned_to=assignee or "", review_ai_status=ai_status)
    if max_conf is not None:
        out.max_confidence = float(max_conf)
    if not out.study.description and attributes.get("StudyDescription"):
        out.study.description = str(attributes["StudyDescription"])
    return out


def _person(value: Any) -> str:
    return person_name(value)[0]


def _scope_clause(caller: Caller) -> list[ColumnElement[bool]]:
    allowed = caller.scope()
    return [] if allowed is None else [Facility.name.in_(list(allowed))]


def _scope_key(caller: Caller) -> list[str] | str:
    """The scope as the page token binds it ("*": every facility)."""
    allowed = caller.scope()
    return "*" if allowed is None else sorted(allowed)


async def load_row(session: AsyncSession, study_id: str | uuid.UUID, caller: Caller
                   ) -> rpb.WorklistStudy:
    """One worklist row the caller may see; NotFound(STUDY_NOT_FOUND) otherwise."""
    sid = study_id if isinstance(study_id, uuid.UUID) else queries.parse_id(study_id)
    row = (await session.execute(_columns().where(StudyRow.id == sid, *_scope_clause(caller)))
           ).one_or_none()
    if row is None:
        raise NotFound("STUDY_NOT_FOUND", f"no study {sid}", study_id=str(sid))
    return _row_pb(row)


def _date(value: str, what: str) -> str:
    try:
        return date.fromisoformat(value).strftime("%Y%m%d")
    except ValueError:
        raise InvalidArgument("INVALID_DATE", f"{what} must be YYYY-MM-DD", **{what: value}
                              ) from None


def _offset(token: str, scope: str) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["s"] == scope and isinstance(data["o"], int) and data["o"] >= 0:
            return int(data["o"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument("INVALID_PAGE_TOKEN",
                          "page_token is malformed or belongs to a different query")


def _token(scope: str, offset: int) -> str:
    raw = json.dumps({"s": scope, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _order(sort: str) -> list[Any]:
    name = sort.removeprefix("-") if sort else "received_at"
    if name not in SORTS:
        raise InvalidArgument("INVALID_SORT", f"sort must be one of {', '.join(SORTS)}, "
                              "optionally prefixed with -", sort=sort)
    descending = sort.startswith("-") or not sort
    column: Any = {"received_at": StudyRow.created_at, "study_date": _study_date,
                   "max_confidence": _max_confidence}[name]
    column = column.desc().nulls_last() if descending else column.asc().nulls_last()
    tie = StudyRow.id.desc() if descending else StudyRow.id.asc()
    return [column, tie]


async def list_worklist(db: Database, request: rpb.ListWorklistRequest, caller: Caller
                        ) -> rpb.ListWorklistResponse:
    """A page of the caller's worklist (newest received first unless sorted otherwise)."""
    if request.state and request.state not in queries.STATES:
        raise InvalidArgument("INVALID_STATE", f"unknown state {request.state!r}",
                              state=request.state)
    if request.ai_status and request.ai_status not in AI_STATUSES:
        raise InvalidArgument("INVALID_AI_STATUS",
                              f"ai_status must be one of {', '.join(AI_STATUSES)}",
                              ai_status=request.ai_status)
    if request.eligible not in ("", "true", "false"):
        raise InvalidArgument("INVALID_ELIGIBLE", "eligible must be true or false")
    size = queries._page_size(request.page_size)
    query = _columns().where(*_scope_clause(caller))
    filters: Sequence[tuple[str, Any]] = (
        ("state", StudyRow.state), ("modality", StudyRow.modality),
        ("facility", Facility.name), ("accession", StudyRow.accession))
    for field, column in filters:
        value = getattr(request, field)
        if value:
            query = query.where(column == value)
    if request.ai_status:
        query = query.where(_ai_status == request.ai_status)
    if request.date_from:
        query = query.where(_study_date >= _date(request.date_from, "date_from"))
    if request.date_to:
        query = query.where(_study_date <= _date(request.date_to, "date_to"))
    if request.assigned_to_me:
        query = query.where(StudyRow.assigned_user_id == caller.user_uuid)
    if request.eligible:
        query = query.where(StudyRow.eligible.is_(request.eligible == "true"))
    order = _order(request.sort)
    scope = queries._scope("worklist", request.state, request.modality, request.ai_status,
                           request.date_from, request.date_to, request.assigned_to_me,
                           request.facility, request.accession, request.sort, request.eligible,
                           _scope_key(caller), caller.user_id if request.assigned_to_me
                           else "")
    offset = _offset(request.page_token, scope)
    async with db.read() as session:
        rows = (await session.execute(query.order_by(*order).offset(offset).limit(size + 1))
                ).all()
    response = rpb.ListWorklistResponse(studies=[_row_pb(r) for r in rows[:size]])
    if len(rows) > size:
        response.next_page_token = _token(scope, offset + size)
    return response


async def get_detail(db: Database, study_id: str, caller: Caller) -> rpb.GetStudyDetailResponse:
    """The worklist row plus state history and series (with their assets)."""
    async with db.read() as session:
        row = await load_row(session, study_id, caller)
    detail = await queries.get_study(db, study_id, caller.scope())
    return rpb.GetStudyDetailResponse(study=row, state_history=detail.state_history,
                                      series=detail.series)
