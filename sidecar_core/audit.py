"""The audit emitter: an append-only row plus a sidecar.audit.v1.<type> message, atomically."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from google.protobuf import struct_pb2
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import Insert

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from sidecar_core.messaging import outbox
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from sidecar_core.store.models import AuditEvent


@dataclass(frozen=True)
class StudyRef:
    """The study identity an audit event carries (no other PHI)."""

    facility: str = ""
    accession: str = ""
    study_instance_uid: str = ""
    study_id: uuid.UUID | None = None


@dataclass(frozen=True)
class PreparedEvent:
    """One audit event as rows: the `audit_events` row and its outbox message."""

    row: dict[str, Any]
    subject: str
    msg_id: str
    payload: bytes


def prepare(
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
) -> PreparedEvent:
    """The rows of one audit event; `event_id` and `at` are given only when an event recorded
    earlier (a spooled one) is stored now."""
    study = study or StudyRef()
    if error is not None:
        error_class = error_class or type(error).__name__
        error_message = error_message or str(error)
    event_id = event_id or uuid.uuid4()
    now = at or datetime.now(UTC)
    if error_class:
        metrics.ERRORS.labels(study.facility, event_type).inc()
    ctx = {k: jsonable(v) for k, v in (context or {}).items()}
    row = {
        "id": event_id,
        "type": event_type,
        "at": now,
        "facility": study.facility,
        "accession": study.accession,
        "study_instance_uid": study.study_instance_uid[:128],
        "study_id": study.study_id,
        "actor": actor,
        "job_id": job_id,
        "attempt": attempt,
        "error_class": error_class[:64],
        "error_message": error_message[:4000],
        "context": ctx,
    }
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
    return PreparedEvent(row, topology.audit_subject(event_type), str(event_id),
                         msg.SerializeToString())


async def record(
    session: AsyncSession | AsyncConnection,
    topology: Topology,
    event_type: str,
    actor: str,
    study: StudyRef | None = None,
    **fields: Any,
) -> uuid.UUID:
    """Appends one audit event and queues its bus message in the caller's transaction; returns
    the event id. `fields`: the keyword arguments of `prepare`."""
    event = prepare(topology, event_type, actor, study, **fields)
    await session.execute(insert(AuditEvent).values(**event.row))
    await outbox.enqueue_raw(session, event.subject, event.msg_id, event.payload)
    return uuid.UUID(event.msg_id)


_COLUMNS = (("id", "uuid"), ("type", "text"), ("at", "timestamptz"), ("facility", "text"),
            ("accession", "text"), ("study_instance_uid", "text"), ("study_id", "uuid"),
            ("actor", "text"), ("job_id", "text"), ("attempt", "int"), ("error_class", "text"),
            ("error_message", "text"), ("context", "text"))
_FROM_ARRAYS = text(
    "SELECT " + ", ".join(n + ("::jsonb" if n == "context" else "") for n, _ in _COLUMNS)
    + " FROM unnest(" + ", ".join(f"CAST(:audit_{n} AS {t}[])" for n, t in _COLUMNS)
    + ") WITH ORDINALITY AS u(" + ", ".join(n for n, _ in _COLUMNS) + ", n) ORDER BY n")


def insert_rows(events: list[PreparedEvent]) -> Insert:
    """One INSERT of prepared events' `audit_events` rows, in their order (their outbox
    messages go through `outbox.insert_rows`), for a unit of work that sends its writes in one
    statement (sidecar_core/store/batch.py). The rows travel as one array per column, so the
    statement has one shape whatever the number of events and SQLAlchemy compiles it once."""
    arrays = {f"audit_{n}": [json.dumps(e.row[n]) if n == "context" else e.row[n]
                             for e in events] for n, _ in _COLUMNS}
    return insert(AuditEvent).from_select([n for n, _ in _COLUMNS],
                                          _FROM_ARRAYS.bindparams(**arrays).columns())


_INSERT_SYNC = (
    "INSERT INTO audit_events (id, type, at, facility, accession, study_instance_uid, "
    "study_id, actor, job_id, attempt, error_class, error_message, context) VALUES "
    "(%(id)s, %(type)s, %(at)s, %(facility)s, %(accession)s, %(study_instance_uid)s, "
    "%(study_id)s, %(actor)s, %(job_id)s, %(attempt)s, %(error_class)s, %(error_message)s, "
    "%(context)s::jsonb)"
)


def record_sync(conn: psycopg.Connection[Any], topology: Topology, event_type: str,
                actor: str, study: StudyRef | None = None, **fields: Any) -> uuid.UUID:
    """`record` on a plain psycopg connection, in its current transaction (the ingest hot
    path's threads)."""
    event = prepare(topology, event_type, actor, study, **fields)
    conn.execute(_INSERT_SYNC, {**event.row, "context": json.dumps(event.row["context"])})
    outbox.enqueue_sync(conn, event.subject, event.msg_id, event.payload)
    return uuid.UUID(event.msg_id)


def jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)
