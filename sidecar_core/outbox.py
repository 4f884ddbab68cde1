"""Transactional outbox: messages are written with the state change and relayed to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from sidecar_core.bus import Bus
from sidecar_core.db import Database
from workflow_svc.store.models import OutboxMessage

log = logging.getLogger(__name__)


async def enqueue(session: AsyncSession | AsyncConnection, subject: str, msg_id: str,
                  message: Message) -> None:
    """Adds a message to the outbox inside the caller's transaction (deduplicated by msg_id)."""
    await session.execute(
        insert(OutboxMessage)
        .values(subject=subject, msg_id=msg_id, payload=message.SerializeToString())
        .on_conflict_do_nothing(index_elements=["msg_id"])
    )


class OutboxRelay:
    """Publishes unpublished outbox rows in order; safe to run in several processes at once."""

    def __init__(self, db: Database, bus: Bus, poll_s: float = 0.05, batch: int = 200) -> None:
        self.db = db
        self.bus = bus
        self.poll_s = poll_s
        self.batch = batch
        self.wake = asyncio.Event()

    async def relay_once(self) -> int:
        async with self.db.unit_of_work() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxMessage)
                        .where(OutboxMessage.published_at.is_(None))
                        .order_by(OutboxMessage.id)
                        .limit(self.batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for row in rows:
                await self.bus.publish(row.subject, row.payload, row.msg_id)
            if rows:
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_([r.id for r in rows]))
                    .values(published_at=datetime.now(UTC))
                )
            return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
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
