"""The worklist: scoped studies with patient, AI status, findings, assignee; filter, sort, page."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility, Finding, Series, User
from sidecar_core.store.models import Study as StudyRow
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop.llm.deid import fold
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

# Patient search (ListWorklistRequest.patient_query): the name's groups folded in SQL as
# `deid.fold` folds the query (Latin letters with accents → their base letter, then lower()).
MAX_QUERY = 64
_ACCENTED = "".join(c for c in map(chr, range(0xC0, 0x250))
                    if len(fold(c)) == 1 and fold(c).isascii() and fold(c).isalpha())
_PN = _attributes["PatientName"]
_name_text = func.concat_ws(" ", _PN["Alphabetic"].astext, _PN["Ideographic"].astext,
                            _PN["Phonetic"].astext)
_name_words = func.lower(func.translate(
    func.replace(func.replace(func.replace(_name_text, "ß", "ss"), "æ", "ae"), "Æ", "ae"),
    _ACCENTED, "".join(fold(c) for c in _ACCENTED)))
# Words start after a space; PN separators and punctuation count as spaces.
_name_spaced = func.concat(" ", func.regexp_replace(_name_words, r"[\^=,.'\s-]+", " ", "g"))
_name_joined = func.regexp_replace(_name_words, r"[\^=,.'\s-]+", "", "g")
_QUERY_SPLIT = re.compile(r"[\s^=,]+")


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def patient_match(query: str) -> ColumnElement[bool]:
    """Studies whose patient the query names: every word starts a word of the name (any PN
    group, case and accents ignored; a word in a script without spaces may sit anywhere in
    the name), or the whole query starts the patient ID or the accession number."""
    text = query.strip()
    if len(text) > MAX_QUERY:
        raise InvalidArgument("QUERY_TOO_LONG", f"patient_query is {len(text)} characters; "
                              f"at most {MAX_QUERY}", length=len(text))
    if not text.isprintable():
        raise InvalidArgument("INVALID_QUERY", "patient_query has control characters")
    if len(text) < 2 and text.isascii():
        raise InvalidArgument("QUERY_TOO_SHORT", "patient_query needs at least 2 characters",
                              query=text)
    words = [w for w in _QUERY_SPLIT.split(fold(text)) if w][:8]
    name = and_(*[
        (_name_spaced.like(literal(f"% {_like(w)}%")) if w.isascii()
         else _name_joined.like(literal(f"%{_like(w)}%"))) for w in words])
    prefix = literal(f"{_like(text.lower())}%")
    return or_(name, func.lower(_attributes["PatientID"].astext).like(prefix),
               func.lower(StudyRow.accession).like(prefix))


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


async def list_worklist(db: Database, request: rpb.ListWorklistRequest, caller: Caller,
                        topology: Topology | None = None) -> rpb.ListWorklistResponse:
    """A page of the caller's worklist (newest received first unless sorted otherwise). A
    patient search is a read of patient data: audited as `worklist.queried` (who, the
    query, the studies it returned) on `topology`."""
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
    if request.patient_query:
        query = query.where(patient_match(request.patient_query))
    order = _order(request.sort)
    scope = queries._scope("worklist", request.state, request.modality, request.ai_status,
                           request.date_from, request.date_to, request.assigned_to_me,
                           request.facility, request.accession, request.sort, request.eligible,
                           _scope_key(caller), caller.user_id if request.assigned_to_me
                           else "", *([request.patient_query] if request.patient_query else []))
    offset = _offset(request.page_token, scope)
    async with db.read() as session:
        rows = (await session.execute(query.order_by(*order).offset(offset).limit(size + 1))
                ).all()
    response = rpb.ListWorklistResponse(studies=[_row_pb(r) for r in rows[:size]])
    if len(rows) > size:
        response.next_page_token = _token(scope, offset + size)
    if request.patient_query and topology is not None:
        async with db.unit_of_work() as session:
            await audit.record(session, topology, "worklist.queried", caller.actor, context={
                "user": caller.username, "role": caller.role,
                "patient_query": request.patient_query.strip(), "offset": offset,
                "study_ids": [s.study.study_id for s in response.studies]})
    return response


async def get_detail(db: Database, study_id: str, caller: Caller) -> rpb.GetStudyDetailResponse:
    """The worklist row plus state history and series (with their assets)."""
    async with db.read() as session:
        row = await load_row(session, study_id, caller)
    detail = await queries.get_study(db, study_id, caller.scope())
    return rpb.GetStudyDetailResponse(study=row, state_history=detail.state_history,
                                      series=detail.series)
