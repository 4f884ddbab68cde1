"""request_id idempotency for mutating RPCs: a repeated request returns the first response."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from sidecar_core.db import Database
from sidecar_core.store.models import IdempotentRequest


def _key(method: str, request_id: str, scope: str) -> str:
    """`method:request_id`; with a scope (a caller's facility), a digest of both, so that one
    caller can never be answered with another's response."""
    if not scope:
        return f"{method}:{request_id}"
    digest = hashlib.sha256(f"{scope}\0{request_id}".encode()).hexdigest()[:48]
    return f"{method}@{digest}"


async def recall(db: Database, method: str, request_id: str, scope: str = "") -> bytes | None:
    """The stored response of an earlier call with this request_id (in `scope`), if any."""
    if not request_id:
        return None
    async with db.read() as session:
        row = (
            await session.execute(
                select(IdempotentRequest.response).where(
                    IdempotentRequest.request_id == _key(method, request_id, scope)
                )
            )
        ).scalar_one_or_none()
    return row


async def remember(db: Database, method: str, request_id: str, response: bytes,
                   scope: str = "") -> None:
    if not request_id:
        return
    async with db.unit_of_work() as session:
        await session.execute(
            insert(IdempotentRequest)
            .values(
                request_id=_key(method, request_id, scope),
                method=method,
                response=response,
            )
            .on_conflict_do_nothing()
        )
