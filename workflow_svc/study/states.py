"""The study state machine: validated transitions, stored history and an audit event for each."""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.errors import FailedPrecondition
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.batch import WriteBatch
from sidecar_core.store.models import Facility, StateTransition, Study


class State(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    AI_COMPLETE = "ai_complete"
    READY_FOR_REVIEW = "ready_for_review"
    ASSIGNED = "assigned"
    IN_REVIEW = "in_review"
    DRAFT_READY = "draft_ready"
    LEGACY_REPORT_COMPLETED = "legacy_report_completed"
    STATUS_RECORDED = "status_recorded"
    INELIGIBLE = "ineligible"
    PREPROCESS_FAILED = "preprocess_failed"
    AI_FAILED = "ai_failed"


S = State
# Where a study's workflow ends: retention counts its days from the transition into one of these.
FINAL_STATES: frozenset[State] = frozenset(
    {State.LEGACY_REPORT_COMPLETED, State.STATUS_RECORDED, State.INELIGIBLE})
# Which states may follow which. A study updated by late instances re-enters RECEIVED.
ALLOWED: dict[State | None, frozenset[State]] = {
    None: frozenset({S.RECEIVED}),
    S.RECEIVED: frozenset(
        {S.PROCESSED, S.INELIGIBLE, S.PREPROCESS_FAILED, S.RECEIVED, S.LEGACY_REPORT_COMPLETED}
    ),
    S.PROCESSED: frozenset({S.AI_COMPLETE, S.AI_FAILED, S.RECEIVED, S.LEGACY_REPORT_COMPLETED}),
    S.AI_COMPLETE: frozenset({S.READY_FOR_REVIEW, S.RECEIVED}),
    S.READY_FOR_REVIEW: frozenset(
        {S.ASSIGNED, S.IN_REVIEW, S.DRAFT_READY, S.RECEIVED, S.LEGACY_REPORT_COMPLETED}
    ),
    S.ASSIGNED: frozenset({S.IN_REVIEW, S.READY_FOR_REVIEW, S.LEGACY_REPORT_COMPLETED}),
    S.IN_REVIEW: frozenset({S.DRAFT_READY, S.READY_FOR_REVIEW, S.LEGACY_REPORT_COMPLETED}),
    S.DRAFT_READY: frozenset({S.IN_REVIEW, S.LEGACY_REPORT_COMPLETED}),
    S.LEGACY_REPORT_COMPLETED: frozenset({S.STATUS_RECORDED}),
    S.STATUS_RECORDED: frozenset(),
    S.INELIGIBLE: frozenset({S.RECEIVED, S.LEGACY_REPORT_COMPLETED}),
    S.PREPROCESS_FAILED: frozenset(
        {S.RECEIVED, S.IN_REVIEW, S.ASSIGNED, S.LEGACY_REPORT_COMPLETED}
    ),
    # PROCESSED: an operator re-drove a failed AI run (dead letters).
    S.AI_FAILED: frozenset(
        {S.RECEIVED, S.PROCESSED, S.ASSIGNED, S.IN_REVIEW, S.DRAFT_READY,
         S.LEGACY_REPORT_COMPLETED}
    ),
}


class IllegalTransition(FailedPrecondition):
    def __init__(self, study_id: uuid.UUID, current: str | None, target: str) -> None:
        super().__init__(
            "ILLEGAL_TRANSITION",
            f"study {study_id} cannot go from {current or 'nothing'} to {target}",
            study_id=study_id,
            from_state=current or "",
            to_state=target,
        )


def check(current: str | None, target: State) -> bool:
    return target in ALLOWED[State(current) if current else None]


async def transition(
    session: AsyncSession,
    topology: Topology,
    study_id: uuid.UUID,
    target: State,
    actor: str,
    reason: str = "",
    expected: State | None = None,
) -> StudyRef:
    """Moves a study to `target` (claiming it with a conditional update); illegal moves raise."""
    row = (
        await session.execute(select(Study).where(Study.id == study_id).with_for_update())
    ).scalar_one()
    current = row.state
    if expected is not None and current != expected:
        raise IllegalTransition(study_id, current, target)
    if not check(current, target):
        raise IllegalTransition(study_id, current, target)
    await session.execute(update(Study).where(Study.id == study_id).values(state=target.value))
    session.add(
        StateTransition(
            study_id=study_id,
            from_state=current,
            to_state=target.value,
            actor=actor,
            reason=reason[:2000],
        )
    )
    ref = await study_ref(session, row)
    await audit.record(
        session,
        topology,
        "study.state_changed",
        actor,
        ref,
        context={"from": current, "to": target.value, "reason": reason},
    )
    return ref


def transition_in(
    batch: WriteBatch,
    study: Study,
    ref: StudyRef,
    target: State,
    actor: str,
    reason: str = "",
) -> StudyRef:
    """`transition` as writes of a batch, for a study row the caller read `FOR UPDATE` in this
    transaction (`ref` its audit identity): same check, history row and audit event. The row
    object is left showing the new state (without making it dirty)."""
    current = study.state
    if not check(current, target):
        raise IllegalTransition(study.id, current, target)
    batch.update_row(Study, study.id, state=target.value)
    batch.add(insert(StateTransition).values(
        study_id=study.id, from_state=current, to_state=target.value, actor=actor,
        reason=reason[:2000]))
    batch.audit("study.state_changed", actor, ref,
                context={"from": current, "to": target.value, "reason": reason})
    set_committed_value(study, "state", target.value)
    return ref


async def study_ref(session: AsyncSession, study: Study) -> StudyRef:
    """The audit identity of a study."""
    name = (
        await session.execute(select(Facility.name).where(Facility.id == study.facility_id))
    ).scalar_one()
    return StudyRef(name, study.accession, study.study_instance_uid, study.id)
