"""Reading a study's rows from the workflow store in tests (plain SQL, no ORM)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from sidecar_core.db import Database


class StoreReader:
    """Queries by study id; the subclass provides `db`."""

    db: Database

    async def _one(self, sql: str, **params: Any) -> Any:
        async with self.db.read() as s:
            return (await s.execute(text(sql), params)).first()

    async def _all(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            return [dict(r._mapping) for r in (await s.execute(text(sql), params)).all()]

    async def state(self, study_id: uuid.UUID) -> str | None:
        row = await self._one("select state from studies where id = :id", id=study_id)
        return None if row is None else row[0]

    async def study(self, study_id: uuid.UUID) -> dict[str, Any]:
        rows = await self._all("select * from studies where id = :id", id=study_id)
        return rows[0]

    async def state_history(self, study_id: uuid.UUID) -> list[str]:
        rows = await self._all("select to_state from state_transitions where study_id = :id "
                               "order by at, id", id=study_id)
        return [r["to_state"] for r in rows]

    async def audit_events(self, study_id: uuid.UUID, event_type: str = "") -> list[dict[str, Any]]:
        rows = await self._all(
            "select type, actor, job_id, attempt, error_class, error_message, context "
            "from audit_events where study_id = :id and (:type = '' or type = :type) "
            "order by seq", id=study_id, type=event_type)
        return rows

    async def audit_types(self, study_id: uuid.UUID) -> list[str]:
        return [e["type"] for e in await self.audit_events(study_id)]

    async def findings(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every finding row of the study, hidden (shadow) ones included."""
        return await self._all("select * from findings where study_id = :id "
                               "order by created_at, id", id=study_id)

    async def ai_runs(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self._all("select * from ai_runs where study_id = :id order by created_at",
                               id=study_id)

    async def assets(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self._all("select * from assets where study_id = :id", id=study_id)

    async def series(self, study_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self._all("select * from series where study_id = :id", id=study_id)
