"""Idempotent consumers: claim a message id inside the handler's transaction, skip repeats."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core.store.models import ConsumedMessage


async def first_time(session: AsyncSession, consumer: str, msg_id: str) -> bool:
    """True the first time `consumer` sees `msg_id` (rolled back with the transaction)."""
    if not msg_id:
        return True
    inserted = (
        await session.execute(
            insert(ConsumedMessage)
            .values(consumer=consumer, msg_id=msg_id)
            .on_conflict_do_nothing()
            .returning(ConsumedMessage.msg_id)
        )
    ).scalar_one_or_none()
    return inserted is not None
