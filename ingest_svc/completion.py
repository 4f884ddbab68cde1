"""Study completion: after a per-facility quiet period, or when the sender says so, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit, outbox
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.subjects import STUDY_RECEIVED, Topology

log = logging.getLogger(__name__)

_COMPLETE = """
UPDATE studies s SET ingest_status = 'complete', completed_at = now(),
       completion_count = s.completion_count + 1
FROM facilities f
WHERE s.facility_id = f.id AND s.ingest_status = 'receiving' AND {condition}
RETURNING s.id, s.completion_count, f.name, s.accession, s.study_instance_uid,
          s.instance_count, s.completed_at
"""


class CompletionTracker:
    """Marks quiet studies complete and announces `study.received` through the outbox."""

    def __init__(self, db: Database, topology: Topology, poll_s: float = 0.25) -> None:
        self.db = db
        self.topology = topology
        self.poll_s = poll_s
        # called with the ids of studies that just became complete (e.g. to prebuild indexes)
        self.on_complete: Callable[[list[uuid.UUID]], None] | None = None

    async def complete_quiet(self) -> list[uuid.UUID]:
        return await self._complete(
            "s.last_instance_at < now() - make_interval(secs => f.quiet_period_s)",
            {},
            reason="quiet period elapsed",
        )

    async def complete_now(
        self, facility: str, study_instance_uid: str, accession: str = ""
    ) -> list[uuid.UUID]:
        condition = "f.name = :facility AND s.study_instance_uid = :uid"
        params: dict[str, Any] = {"facility": facility, "uid": study_instance_uid}
        if accession:
            condition += " AND s.accession = :accession"
            params["accession"] = accession
        return await self._complete(condition, params, reason="sender marked the study complete")

    async def _complete(
        self, condition: str, params: dict[str, Any], reason: str
    ) -> list[uuid.UUID]:
        async with self.db.unit_of_work() as s:
            rows = (await s.execute(text(_COMPLETE.format(condition=condition)), params)).all()
            for study_id, count, facility, accession, uid, n, completed_at in rows:
                key = common_pb2.StudyKey(
                    facility=facility, accession=accession, study_instance_uid=uid
                )
                msg = events_pb2.StudyReceived(
                    study_id=str(study_id), study=key, instance_count=n, is_update=count > 1
                )
                msg.completed_at.FromDatetime(completed_at)
                await outbox.enqueue(
                    s,
                    self.topology.subject(STUDY_RECEIVED),
                    f"study.received:{study_id}:{count}",
                    msg,
                )
                await audit.record(
                    s,
                    self.topology,
                    "study.received" if count == 1 else "study.updated",
                    "ingest_svc",
                    StudyRef(facility, accession, uid, study_id),
                    context={"instance_count": n, "completion": count, "reason": reason},
                )
        if rows and self.on_complete is not None:
            self.on_complete([r[0] for r in rows])
        return [r[0] for r in rows]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.complete_quiet()
            except Exception:
                log.warning("completion check failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_s)
