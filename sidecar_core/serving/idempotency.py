"""request_id idempotency for mutating RPCs: a repeated request returns the first response."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from sidecar_core.db import Database
from sidecar_core.store.models import IdempotentRequest


async def recall(db: Database, method: str, request_id: str) -> bytes | None:
    """The stored response of an earlier call with this request_id, if any."""
    if not request_id:
        return None
    async with db.read() as session:
        row = (
            await session.execute(
                select(IdempotentRequest.response).where(
                    IdempotentRequest.request_id == f"{method}:{request_id}"
                )
            )
        ).scalar_one_or_none()
    return row


async def remember(db: Database, method: str, request_id: str, response: bytes) -> None:
    if not request_id:
        return
    async with db.unit_of_work() as session:
        await session.execute(
            insert(IdempotentRequest)
            .values(
                request_id=f"{method}:{request_id}",
                method=method,
                response=response,
            )
            .on_conflict_do_nothing()
        )
