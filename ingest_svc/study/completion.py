"""Study completion: after a per-facility quiet period, on association release, or when the
sender says so, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ingest_svc.study.refused import RefusedStudies
from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.messaging import outbox
from sidecar_core.messaging.subjects import STUDY_RECEIVED, Topology
from sidecar_core.observability import tracing

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

    def __init__(self, db: Database, topology: Topology, poll_s: float = 0.25,
                 refused: RefusedStudies | None = None) -> None:
        self.db = db
        self.topology = topology
        self.poll_s = poll_s
        self.refused = refused  # studies a sender is sending again after our storage failure
        # called with the ids of studies that just became complete (e.g. to prebuild indexes)
        self.on_complete: Callable[[list[uuid.UUID]], None] | None = None
        self._released: set[asyncio.Task[Any]] = set()

    async def complete_quiet(self) -> list[uuid.UUID]:
        """Studies quiet for their facility's quiet period (not where completion is explicit),
        counted from the last stored instance and from the last instance our own storage
        failure refused (its sender sends it again)."""
        condition = ("f.completion_mode <> 'explicit' AND "
                     "s.last_instance_at < now() - make_interval(secs => f.quiet_period_s)")
        params: dict[str, Any] = {}
        refused = self.refused.ages() if self.refused is not None else []
        if refused:
            condition += (
                " AND NOT EXISTS (SELECT 1 FROM unnest(CAST(:refused_facilities AS uuid[]), "
                "CAST(:refused_uids AS text[]), CAST(:refused_ages AS float8[])) "
                "AS r(facility_id, uid, age) WHERE r.facility_id = s.facility_id "
                "AND r.uid = s.study_instance_uid AND r.age < f.quiet_period_s)")
            params = {"refused_facilities": [f for f, _, _ in refused],
                      "refused_uids": [u for _, u, _ in refused],
                      "refused_ages": [a for _, _, a in refused]}
        return await self._complete(condition, params, reason="quiet period elapsed")

    def on_association_released(self, facility_id: uuid.UUID, study_uids: set[str]) -> None:
        """Schedules `association_released` (on the event loop, from the DIMSE thread's
        call_soon_threadsafe); failures are logged, the quiet period remains the safety net."""
        task = asyncio.ensure_future(self._released_safely(facility_id, set(study_uids)))
        self._released.add(task)
        task.add_done_callback(self._released.discard)

    async def _released_safely(self, facility_id: uuid.UUID, study_uids: set[str]) -> None:
        try:
            await self.association_released(facility_id, study_uids)
        except Exception:
            log.warning("completion on association release failed; the quiet period "
                        "still completes the study", exc_info=True)

    async def association_released(
        self, facility_id: uuid.UUID, study_instance_uids: set[str]
    ) -> list[uuid.UUID]:
        """A DIMSE association that stored instances of these studies was released: in a
        facility completing on association release, each study completes once its settle time
        has passed without another instance (another association still sending keeps it open
        until that one is released, or the quiet period ends)."""
        if not study_instance_uids:
            return []
        async with self.db.read() as s:
            row = (
                await s.execute(
                    text("SELECT completion_mode, association_settle_s FROM facilities "
                         "WHERE id = :id"),
                    {"id": facility_id},
                )
            ).first()
        if row is None or row[0] != "association":
            return []
        await asyncio.sleep(float(row[1]))
        return await self._complete(
            "f.id = :facility_id AND f.completion_mode = 'association' AND "
            "s.study_instance_uid = ANY(:uids) AND "
            "s.last_instance_at <= now() - make_interval(secs => f.association_settle_s)",
            {"facility_id": facility_id, "uids": sorted(study_instance_uids)},
            reason="association released",
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
                # The root of the study's trace: every job and event after it is a child.
                with tracing.span("study.complete", study_id=str(study_id), reason=reason):
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
