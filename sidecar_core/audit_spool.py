"""Audit events that could not be stored because the database was unreachable.

`record_or_spool` writes an audit event as usual; when the database cannot take it (the very
outage the event may be about), the event goes to a local spool file instead, one JSON line,
fsynced. `AuditSpool.run` replays spooled events into the store once the database answers
again, with their original id and time, each exactly once (an event already stored, e.g. by a
replay that crashed before deleting its file, is skipped). So a failure is audited even while
the audit store itself is down; it only shows up late.

Layout: `<dir>/pending.jsonl` takes new events; a replay first renames it to
`replay-<uuid>.jsonl` (new events then start a new pending file), stores every `replay-*`
file's events in one transaction per file and deletes the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology

log = logging.getLogger(__name__)
PENDING = "pending.jsonl"


class AuditSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def keep(self, event: dict[str, Any]) -> None:
        """Appends one event (the keyword arguments of `audit.record`, JSON-able) durably."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.directory / PENDING, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob("*.jsonl"))

    async def replay(self, db: Database, topology: Topology) -> int:
        """Stores every spooled event not stored yet; returns how many it stored."""
        pending = self.directory / PENDING
        if pending.exists():
            pending.rename(self.directory / f"replay-{uuid.uuid4().hex}.jsonl")
        stored = 0
        for path in sorted(self.directory.glob("replay-*.jsonl")):
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            async with db.unit_of_work() as session:
                for event in events:
                    exists = await session.execute(
                        text("SELECT 1 FROM audit_events WHERE id = :id"),
                        {"id": uuid.UUID(event["event_id"])})
                    if exists.first() is None:
                        await audit.record(session, topology, **_arguments(event))
                        stored += 1
            path.unlink()
        return stored

    async def run(self, db: Database, topology: Topology, stop: asyncio.Event,
                  interval_s: float = 5.0) -> None:
        """Replays whenever something is spooled, until `stop`."""
        while not stop.is_set():
            if self.pending():
                try:
                    stored = await self.replay(db, topology)
                    if stored:
                        log.info("stored %d audit events spooled during an outage", stored)
                except Exception as exc:  # still down: try again later
                    log.warning("spooled audit events not stored yet: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def record_or_spool(db: Database, topology: Topology, spool: AuditSpool | None,
                          event_type: str, actor: str, study: StudyRef | None = None,
                          **fields: Any) -> None:
    """`audit.record` in its own transaction; spooled when the database cannot take it."""
    event_id, at = uuid.uuid4(), datetime.now(UTC)
    try:
        async with db.unit_of_work() as session:
            await audit.record(session, topology, event_type, actor, study, event_id=event_id,
                               at=at, **fields)
        return
    except Exception as exc:
        if spool is None:
            log.exception("could not record audit event %s", event_type)
            return
        log.warning("audit event %s spooled, the database did not take it: %r",
                    event_type, exc)
    study = study or StudyRef()
    error = fields.pop("error", None)
    if error is not None:
        fields.setdefault("error_class", type(error).__name__)
        fields.setdefault("error_message", str(error))
    spool.keep({
        "event_id": str(event_id), "at": at.isoformat(), "event_type": event_type,
        "actor": actor, "facility": study.facility, "accession": study.accession,
        "study_instance_uid": study.study_instance_uid,
        "study_id": str(study.study_id) if study.study_id else "",
        **{k: audit.jsonable(v) for k, v in fields.items()},
    })


def _arguments(event: dict[str, Any]) -> dict[str, Any]:
    event = dict(event)
    study = StudyRef(event.pop("facility", ""), event.pop("accession", ""),
                     event.pop("study_instance_uid", ""),
                     uuid.UUID(s) if (s := event.pop("study_id", "")) else None)
    return {**event, "study": study, "event_id": uuid.UUID(event["event_id"]),
            "at": datetime.fromisoformat(event["at"])}
