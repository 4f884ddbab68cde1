"""Study-level review actions: claim and release, open (in_review), complete, access events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Finding, ReviewEvent, User
from sidecar_core.store.models import Study as StudyRow
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop import export
from workflow_svc.review.worklist import load_row
from workflow_svc.study import queries, states
from workflow_svc.study.states import State

ACCESS_TYPES = ("overlay_toggled", "finding_selected")
_OPENS_FROM = (State.READY_FOR_REVIEW, State.ASSIGNED, State.AI_FAILED, State.PREPROCESS_FAILED)


async def _locked(session: AsyncSession, study_id: str, caller: Caller) -> StudyRow:
    """The study row, locked, after the scope check (NotFound alike for unseen studies)."""
    row = await load_row(session, study_id, caller)
    return (await session.execute(select(StudyRow).where(
        StudyRow.id == uuid.UUID(row.study.study_id)).with_for_update())).scalar_one()


async def _holder(session: AsyncSession, user_id: uuid.UUID | None) -> str:
    if user_id is None:
        return ""
    return str(await session.scalar(select(User.username).where(User.id == user_id)) or "")


async def claim(db: Database, topology: Topology, study_id: str, caller: Caller
                ) -> rpb.WorklistStudy:
    """Assigns the study to the caller (state `assigned` where the state machine allows it);
    FailedPrecondition(STUDY_CLAIMED) when another radiologist holds it."""
    caller.require_writer()
    async with db.unit_of_work() as s:
        study = await _locked(s, study_id, caller)
        if study.assigned_user_id is not None and study.assigned_user_id != caller.user_uuid:
            holder = await _holder(s, study.assigned_user_id)
            raise FailedPrecondition("STUDY_CLAIMED", f"the study is assigned to {holder}",
                                     study_id=study.id, assigned_to=holder)
        if study.assigned_user_id is None:
            await s.execute(update(StudyRow).where(StudyRow.id == study.id).values(
                assigned_user_id=caller.user_uuid, assigned_at=datetime.now(UTC)))
            if study.state and states.check(study.state, State.ASSIGNED):
                await states.transition(s, topology, study.id, State.ASSIGNED, caller.actor,
                                        "claimed by a radiologist")
            ref = await states.study_ref(s, study)
            await audit.record(s, topology, "review.study_claimed", caller.actor, ref,
                               context={"user": caller.username})
        return await load_row(s, study.id, caller)


async def release(db: Database, topology: Topology, study_id: str, caller: Caller
                  ) -> rpb.WorklistStudy:
    """Gives a claimed study back (state `ready_for_review` again when it was `assigned`); only
    its holder or an admin may; releasing an unclaimed study changes nothing."""
    caller.require_writer()
    async with db.unit_of_work() as s:
        study = await _locked(s, study_id, caller)
        if study.assigned_user_id is not None:
            if study.assigned_user_id != caller.user_uuid and caller.role != "admin":
                holder = await _holder(s, study.assigned_user_id)
                raise FailedPrecondition("STUDY_CLAIMED", f"the study is assigned to {holder}",
                                         study_id=study.id, assigned_to=holder)
            await s.execute(update(StudyRow).where(StudyRow.id == study.id).values(
                assigned_user_id=None, assigned_at=None))
            if study.state == State.ASSIGNED:
                await states.transition(s, topology, study.id, State.READY_FOR_REVIEW,
                                        caller.actor, "released by a radiologist")
            ref = await states.study_ref(s, study)
            await audit.record(s, topology, "review.study_released", caller.actor, ref,
                               context={"user": caller.username})
        return await load_row(s, study.id, caller)


async def open_study(db: Database, topology: Topology, study_id: str, caller: Caller
                     ) -> rpb.WorklistStudy:
    """Audits `review.study_opened`; a radiologist or admin opening a reviewable study moves it
    to `in_review` (an auditor's look changes nothing). Never blocks: any study opens."""
    async with db.unit_of_work() as s:
        study = await _locked(s, study_id, caller)
        before = study.state or ""
        if caller.role != "auditor" and before in _OPENS_FROM:
            await states.transition(s, topology, study.id, State.IN_REVIEW, caller.actor,
                                    "opened for review")
        ref = await states.study_ref(s, study)
        await audit.record(s, topology, "review.study_opened", caller.actor, ref,
                           context={"user": caller.username, "role": caller.role,
                                    "state": before})
        return await load_row(s, study.id, caller)


async def complete(db: Database, topology: Topology, study_id: str, caller: Caller
                   ) -> rpb.WorklistStudy:
    """Records that the radiologist is done (`review.completed`, review status `completed`)."""
    caller.require_writer()
    async with db.unit_of_work() as s:
        study = await _locked(s, study_id, caller)
        await s.execute(update(StudyRow).where(StudyRow.id == study.id).values(
            review_status="completed"))
        decisions = await s.scalar(select(func.count()).select_from(ReviewEvent).where(
            ReviewEvent.study_id == study.id)) or 0
        ref = await states.study_ref(s, study)
        await audit.record(s, topology, "review.completed", caller.actor, ref,
                           context={"user": caller.username, "decisions": int(decisions),
                                    "state": study.state or ""})
        await export.enqueue(s, topology, study.id, ref, "review completed")  # report-loop
        return await load_row(s, study.id, caller)


async def record_access(db: Database, topology: Topology, request: rpb.RecordAccessRequest,
                        caller: Caller) -> None:
    """Audits `review.overlay_toggled` or `review.finding_selected` (any role)."""
    if request.type not in ACCESS_TYPES:
        raise InvalidArgument("INVALID_ACCESS_TYPE",
                              f"type must be one of {', '.join(ACCESS_TYPES)}", type=request.type)
    context: dict[str, object] = {"user": caller.username}
    async with db.unit_of_work() as s:
        row = await load_row(s, request.study_id, caller)
        study = await s.get(StudyRow, uuid.UUID(row.study.study_id))
        assert study is not None
        if request.finding_id:
            fid = queries.parse_id(request.finding_id, "finding")
            if await s.scalar(select(Finding.id).where(Finding.id == fid,
                                                       Finding.study_id == study.id)) is None:
                raise NotFound("FINDING_NOT_FOUND", f"no finding {fid} in this study",
                               finding_id=str(fid))
            context["finding_id"] = str(fid)
        elif request.type == "finding_selected":
            raise InvalidArgument("FINDING_REQUIRED", "finding_selected needs a finding_id")
        if request.HasField("visible"):
            context["visible"] = request.visible
        ref = await states.study_ref(s, study)
        await audit.record(s, topology, f"review.{request.type}", caller.actor, ref,
                           context={**context, **caller.audit_context()})
