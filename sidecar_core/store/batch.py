"""A transaction's writes sent to PostgreSQL as one statement (one round trip), audit included.

Each queued write becomes a data-modifying CTE of one `SELECT pg_notify(...)` statement, with
the unit's audit events as one INSERT and their outbox messages as another. All the
CTEs see the same snapshot and none sees another's rows, so a batch never writes the same row
twice (callers merge their updates of a row with `update_row`); constraints are checked at the
end of the statement, when every CTE's rows exist. The caller's transaction still commits, so
the writes are exactly as atomic and durable as the statements they replace.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert, Update

from sidecar_core import audit
from sidecar_core.messaging import outbox
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Base


class WriteBatch:
    """Collects the writes of one unit of work; `flush` sends them together."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._writes: list[Insert | Update] = []
        self._rows: dict[tuple[type[Base], Any], dict[str, Any]] = {}  # (model, id) -> values
        self._events: list[audit.PreparedEvent] = []
        self._messages: list[tuple[str, str, bytes]] = []

    def add(self, statement: Insert | Update) -> None:
        """An INSERT or UPDATE of rows no other write of this batch touches."""
        self._writes.append(statement)

    def update_row(self, model: type[Base], row_id: Any, **values: Any) -> None:
        """Sets columns of one row of `model` (by `id`); updates of the same row are merged
        into one."""
        self._rows.setdefault((model, row_id), {}).update(values)

    def audit(self, event_type: str, actor: str, study: audit.StudyRef | None = None,
              **fields: Any) -> uuid.UUID:
        """An audit event (`audit.record`'s arguments), stored when the batch is flushed."""
        event = audit.prepare(self.topology, event_type, actor, study, **fields)
        self._events.append(event)
        return uuid.UUID(event.msg_id)

    def enqueue(self, subject: str, msg_id: str, message: Message) -> None:
        """An outbox message (`outbox.enqueue`), stored when the batch is flushed."""
        self._messages.append((subject, msg_id, message.SerializeToString()))

    async def flush(self, session: AsyncSession) -> None:
        """Sends every queued write in one statement, in the session's transaction."""
        writes: list[Insert | Update] = list(self._writes)
        for (model, row_id), values in self._rows.items():
            writes.append(update(model).where(model.__table__.c.id == row_id)
                          .values(**values))
        messages = [(e.subject, e.msg_id, e.payload) for e in self._events] + self._messages
        if self._events:
            writes.append(audit.insert_rows(self._events))
        if messages:
            writes.append(outbox.insert_rows(messages))
        self._writes, self._rows, self._events, self._messages = [], {}, [], []
        if not writes:
            return
        ctes = [w.cte(f"w{i}") for i, w in enumerate(writes)]
        # the relays' wake-up (pg_notify) rides on the same statement when there are messages
        final = (select(func.pg_notify(outbox.CHANNEL, outbox.notice(m[0] for m in messages)))
                 if messages
                 else select(literal(1)))
        await session.execute(final.add_cte(*ctes))
