"""Transactional outbox: messages are written with the state change and relayed to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from google.protobuf.message import Message
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sidecar_core.db import Database
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.permissions import AUDIT_RELAY, subject_regex, table
from sidecar_core.observability import tracing
from sidecar_core.store.models import OutboxMessage

log = logging.getLogger(__name__)
CHANNEL = "sidecar_outbox"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :notice)")
_NOTICE_MAX = 7900  # bytes: PostgreSQL's payload limit is 8000


def notice(subjects: Iterable[str]) -> str:
    """The payload of the relays' NOTIFY: the distinct subjects a transaction queued, so that
    only the relays that may publish them wake up (`OutboxRelay.wants`); too many to fit, and
    the payload is empty, which wakes every relay."""
    payload = " ".join(sorted(set(subjects)))
    return payload if len(payload.encode()) <= _NOTICE_MAX else ""


async def enqueue(session: AsyncSession | AsyncConnection, subject: str, msg_id: str,
                  message: Message) -> None:
    """Adds a message to the outbox inside the caller's transaction (deduplicated by msg_id)."""
    await enqueue_raw(session, subject, msg_id, message.SerializeToString())


async def enqueue_raw(session: AsyncSession | AsyncConnection, subject: str, msg_id: str,
                      payload: bytes) -> None:
    await session.execute(
        insert(OutboxMessage)
        .values(subject=subject, msg_id=msg_id, payload=payload,
                trace_context=tracing.current_traceparent())
        .on_conflict_do_nothing(index_elements=["msg_id"])
    )
    # Wakes the relays of this subject when the transaction commits (PostgreSQL folds repeats
    # of a payload into one).
    await session.execute(_NOTIFY, {"notice": notice([subject])})


_FROM_ARRAYS = text(
    "SELECT subject, msg_id, payload, trace_context FROM unnest(CAST(:outbox_subject AS text[]), "
    "CAST(:outbox_msg_id AS text[]), CAST(:outbox_payload AS bytea[]), "
    "CAST(:outbox_trace AS text[])) WITH ORDINALITY AS u(subject, msg_id, payload, "
    "trace_context, n) ORDER BY n")


def insert_rows(messages: Sequence[tuple[str, str, bytes]]) -> Insert:
    """One INSERT of (subject, msg_id, payload) outbox rows in their order, deduplicated by
    msg_id as `enqueue_raw` is, for a caller that sends it within one statement and wakes the
    relays (pg_notify on CHANNEL) in the same transaction. The rows travel as one array per
    column: one statement shape, compiled once."""
    trace = tracing.current_traceparent()
    rows = _FROM_ARRAYS.bindparams(
        outbox_subject=[m[0] for m in messages], outbox_msg_id=[m[1] for m in messages],
        outbox_payload=[m[2] for m in messages], outbox_trace=[trace] * len(messages))
    return (insert(OutboxMessage)
            .from_select(["subject", "msg_id", "payload", "trace_context"], rows.columns())
            .on_conflict_do_nothing(index_elements=["msg_id"]))


def enqueue_sync(conn: psycopg.Connection[Any], subject: str, msg_id: str,
                 payload: bytes) -> None:
    """`enqueue` on a plain psycopg connection, in its current transaction."""
    conn.execute("INSERT INTO outbox (subject, msg_id, payload, trace_context) "
                 "VALUES (%s, %s, %s, %s) ON CONFLICT (msg_id) DO NOTHING",
                 (subject, msg_id, payload, tracing.current_traceparent()))
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notice([subject])))


class OutboxRelay:
    """Publishes unpublished outbox rows in order; safe to run in several processes at once.

    The outbox table is shared by every process, and each process's NATS user may publish only
    its own subjects (sidecar_core.messaging.permissions): a relay given `subjects` (NATS
    patterns) takes only the rows whose subject matches them, and leaves the others to the
    relay of the process that may publish them (a re-driven `ai_run.v1.finished` waits for the
    normalizer's). `subjects=None` relays every row (tests, a bus without permissions)."""

    def __init__(self, db: Database, bus: Bus, poll_s: float = 2.0, batch: int = 200,
                 coalesce_s: float = 0.005, subjects: Sequence[str] | None = None,
                 audit_wakes: bool = True) -> None:
        """Woken by LISTEN/NOTIFY on commit; `poll_s` is only the safety net when idle.

        After a wake-up the relay waits `coalesce_s` so that a burst of commits (one audit
        event per duplicate instance of a re-sent study, say) is relayed as one batch.
        `audit_wakes`: a transaction that queued audit events only wakes it (`wants`)."""
        self.db = db
        self.bus = bus
        self.subjects = None if subjects is None else subject_regex(subjects)
        # which notices wake it: one naming a subject of its own, or only audit events
        self._own = None if subjects is None else re.compile(subject_regex(
            s for s in subjects if s != bus.topology.audit_subject(">")))
        self._audit = re.compile(subject_regex([bus.topology.audit_subject(">")]))
        self.audit_wakes = audit_wakes
        self.poll_s = poll_s
        self.batch = batch
        self.coalesce_s = coalesce_s
        self.wake = asyncio.Event()

    @classmethod
    def of_user(cls, db: Database, bus: Bus, user: str, **options: Any) -> OutboxRelay:
        """The relay of the process whose NATS user is `user`: its permitted subjects only.
        Only the `AUDIT_RELAY` user's relay wakes for audit events alone; the others publish
        audit events with their own subjects' rows and in their polls."""
        options.setdefault("audit_wakes", user == AUDIT_RELAY)
        return cls(db, bus, subjects=table(bus.topology)[user].outbox, **options)

    def wants(self, payload: str) -> bool:
        """Whether a NOTIFY whose payload is `payload` (`notice`: the subjects one transaction
        queued) concerns this relay: one of its own subjects (the relay that takes a
        transaction's other subjects takes its audit events too), audit events only when it is
        the relay they wake (`audit_wakes`; every relay may publish them), or a payload that
        names nothing (a writer that does not say)."""
        if self._own is None or not payload:
            return True
        others = [s for s in payload.split() if not self._audit.match(s)]
        if not others:
            return self.audit_wakes
        return any(self._own.match(s) for s in others)

    async def relay_once(self) -> int:
        query = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        if self.subjects is not None:
            query = query.where(OutboxMessage.subject.regexp_match(self.subjects))
        async with self.db.unit_of_work() as session:
            rows = (
                (
                    await session.execute(
                        query
                        .order_by(OutboxMessage.id)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            # in order on one connection, the acknowledgements awaited together; if one
            # fails the batch is published again and JetStream drops the repeats (Nats-Msg-Id)
            await asyncio.gather(*(self.bus.publish(
                row.subject, row.payload, row.msg_id,
                {tracing.TRACEPARENT: row.trace_context} if row.trace_context else None)
                for row in rows))
            if rows:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_([r.id for r in rows]))
                    .values(published_at=datetime.now(UTC))
                )
            return len(rows)

    async def listen(self, stop: asyncio.Event) -> None:
        """Sets `wake` on every outbox NOTIFY this relay `wants` (the others it still finds by
        its `poll_s` safety net); reconnects after a lost connection."""
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self.db.libpq_url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.wake.set()  # catch up with anything committed before LISTEN
                    while not stop.is_set():
                        async for note in conn.notifies(timeout=1.0):
                            if self.wants(note.payload):
                                self.wake.set()
            except Exception:
                log.warning("outbox listener lost its connection; reconnecting", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self.listen(stop))
        try:
            await self._relay(stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _relay(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.relay_once()
            except Exception:
                log.warning("outbox relay failed; retrying", exc_info=True)
                n = 0
                await asyncio.sleep(1.0)
            if n == 0:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.poll_s)
                if self.coalesce_s > 0:
                    await asyncio.sleep(self.coalesce_s)
