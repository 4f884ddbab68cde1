"""The audit emitter: an append-only row plus a sidecar.audit.v1.<type> message, atomically."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import outbox
from sidecar_core.subjects import Topology
from workflow_svc.store.models import AuditEvent


@dataclass(frozen=True)
class StudyRef:
    """The study identity an audit event carries (no other PHI)."""

    facility: str = ""
    accession: str = ""
    study_instance_uid: str = ""
    study_id: uuid.UUID | None = None


async def record(
    session: AsyncSession | AsyncConnection,
    topology: Topology,
    event_type: str,
    actor: str,
    study: StudyRef | None = None,
    *,
    job_id: str = "",
    attempt: int = 0,
    error: BaseException | None = None,
    error_class: str = "",
    error_message: str = "",
    context: dict[str, Any] | None = None,
    event_id: uuid.UUID | None = None,
    at: datetime | None = None,
) -> uuid.UUID:
    """Appends one audit event and queues its bus message; returns the event id.

    `event_id` and `at` are given only when an event recorded earlier (a spooled one) is
    stored now."""
    study = study or StudyRef()
    if error is not None:
        error_class = error_class or type(error).__name__
        error_message = error_message or str(error)
    event_id = event_id or uuid.uuid4()
    now = at or datetime.now(UTC)
    ctx = {k: jsonable(v) for k, v in (context or {}).items()}
    await session.execute(
        insert(AuditEvent).values(
            id=event_id,
            type=event_type,
            at=now,
            facility=study.facility,
            accession=study.accession,
            study_instance_uid=study.study_instance_uid[:128],
            study_id=study.study_id,
            actor=actor,
            job_id=job_id,
            attempt=attempt,
            error_class=error_class[:64],
            error_message=error_message[:4000],
            context=ctx,
        )
    )
    msg = events_pb2.AuditRecorded(
        event_id=str(event_id),
        type=event_type,
        actor=actor,
        study=common_pb2.StudyKey(
            facility=study.facility,
            accession=study.accession,
            study_instance_uid=study.study_instance_uid[:128],
        ),
        study_id=str(study.study_id or ""),
        job_id=job_id,
        attempt=attempt,
        error_class=error_class[:64],
        error_message=error_message[:4000],
    )
    msg.at.FromDatetime(now)
    struct = struct_pb2.Struct()
    struct.update(ctx)
    msg.context.CopyFrom(struct)
    await outbox.enqueue(session, topology.audit_subject(event_type), str(event_id), msg)
    return event_id


def jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)
