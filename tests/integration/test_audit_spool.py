"""The audit spool: events the database could not take are stored later, each exactly once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.audit_spool import AuditSpool, record_or_spool
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology

pytestmark = pytest.mark.integration


async def test_spooled_events_are_stored_once_with_their_time(db: Database,
                                                              tmp_path: Path) -> None:
    topology = Topology()
    spool = AuditSpool(tmp_path / "spool")
    down = Database("postgresql://nobody@127.0.0.1:9/none")  # nothing listens on port 9
    try:
        for i in range(3):
            await record_or_spool(down, topology, spool, "study.receive_failed", "test",
                                  StudyRef("f", "", f"1.2.{i}"), error=OSError(28, "full"),
                                  context={"i": i})
    finally:
        await down.close()
    lines = [json.loads(x) for x in (spool.directory / "pending.jsonl").read_text().splitlines()]
    assert [e["context"]["i"] for e in lines] == [0, 1, 2]
    assert lines[0]["error_class"] == "OSError" and "full" in lines[0]["error_message"]

    # a replay that stored the first event and crashed before deleting its file
    first = dict(lines[0])
    async with db.unit_of_work() as s:
        await audit.record(s, topology, first["event_type"], first["actor"],
                           StudyRef("f", "", "1.2.0"), event_id=uuid.UUID(first["event_id"]),
                           error_class="OSError")
    assert await spool.replay(db, topology) == 2
    assert not spool.pending()
    async with db.read() as s:
        rows = (await s.execute(text(
            "select id, at, study_instance_uid, error_class from audit_events "
            "where type = 'study.receive_failed' order by study_instance_uid"))).all()
    assert [r.study_instance_uid for r in rows] == ["1.2.0", "1.2.1", "1.2.2"]
    assert {str(r.id) for r in rows} == {e["event_id"] for e in lines}
    spooled_at = {e["event_id"]: e["at"] for e in lines}
    assert all(r.at.isoformat() == spooled_at[str(r.id)] for r in rows[1:])
    assert await spool.replay(db, topology) == 0
