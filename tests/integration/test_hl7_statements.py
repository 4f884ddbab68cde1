"""An ORU^R01 costs three statements and one transaction, and still writes every row and event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, text

from sidecar_core.db import Database
from sidecar_core.messaging import outbox
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from sidecar_core.observability.metrics import StageClock
from sidecar_core.store.models import Facility
from tests.integration.test_hl7_mllp import SENDER, add_study, oru, rows
from workflow_svc.report_loop.hl7 import intake
from workflow_svc.report_loop.legacy_reports import match_waiting_reports

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("hl7stmt", "HL7STMT")


@pytest.fixture()
async def store(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    async with db.unit_of_work() as s:
        s.add(Facility(id=uuid.uuid4(), name="north", hl7_sending_facility=SENDER))
    try:
        yield db
    finally:
        await db.close()


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements and transaction ends the engine sends while the block runs."""
    seen: list[str] = []

    def on_execute(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    def on_commit(conn):  # type: ignore[no-untyped-def]
        seen.append("COMMIT")

    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    event.listen(db.engine.sync_engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)
        event.remove(db.engine.sync_engine, "commit", on_commit)


async def test_a_matched_report_is_three_statements_and_one_commit(store: Database) -> None:
    study_id = await add_study(store, "ACC-1")
    with statements(store) as seen:
        _, verdict = await intake.receive(store, TOPOLOGY, oru("S-1"), "mllp", "127.0.0.1")
    assert verdict.code == "AA" and "1 matched" in verdict.text
    assert len(seen) == 4 and seen[-1] == "COMMIT", seen
    # everything the statement-per-write version wrote is there
    [study] = await rows(store, "select state, handoff_status from studies where id=:i",
                         i=study_id)
    assert study == {"state": "legacy_report_completed", "handoff_status": "pending"}
    [moved] = await rows(store, "select from_state, to_state, actor from state_transitions")
    assert moved == {"from_state": "ready_for_review", "to_state": "legacy_report_completed",
                     "actor": "legacy_reports"}
    [report] = await rows(store, "select id, study_id, matched_by, hl7_message_id "
                                 "from legacy_reports")
    [message] = await rows(store, "select id, status from hl7_messages")
    assert report["study_id"] == study_id and report["matched_by"] == "message"
    assert report["hl7_message_id"] == message["id"] and message["status"] == "accepted"
    [job] = await rows(store, "select status, job_id, legacy_report_id from handoffs")
    assert job["status"] == "pending" and job["legacy_report_id"] == report["id"]
    events = await rows(store, "select type, context, chain, hash from audit_events "
                               "order by seq")
    assert [e["type"] for e in events] == ["study.state_changed", "legacy_report.completed"]
    assert all(e["hash"] and e["chain"] is not None for e in events)  # chained at commit
    assert events[1]["context"]["legacy_report_id"] == str(report["id"])
    outbox = await rows(store, "select subject, msg_id from outbox order by id")
    assert [o["subject"].split(".", 1)[1] for o in outbox] == [
        "audit.v1.study.state_changed", "audit.v1.legacy_report.completed", "job.v1.handoff"]
    assert outbox[2]["msg_id"] == job["job_id"]


async def test_two_reports_of_one_study_in_one_message(store: Database) -> None:
    """A preliminary and a final report of the same accession in one message: the second sees
    the first's writes (each report's batch is sent before the next report is read)."""
    study_id = await add_study(store, "ACC-2")
    first, second = oru("S-2", "ACC-2", "P").split(b"\rOBR|1|"), oru("S-2", "ACC-2", "F")
    final_obr = b"OBR|2|" + second.split(b"\rOBR|1|")[1]
    message = first[0] + b"\rOBR|1|" + first[1] + final_obr
    _, verdict = await intake.receive(store, TOPOLOGY, message)
    assert verdict.code == "AA" and "2 report(s) recorded, 2 matched" in verdict.text, verdict
    types = [r["type"] for r in await rows(store, "select type from audit_events order by seq")]
    assert types == ["legacy_report.preliminary", "study.state_changed",
                     "legacy_report.completed"]
    [study] = await rows(store, "select state from studies where id=:i", i=study_id)
    assert study["state"] == "legacy_report_completed"


async def test_a_repeat_and_an_unknown_sender_still_take_their_old_paths(
        store: Database) -> None:
    await add_study(store, "ACC-3")
    assert (await intake.receive(store, TOPOLOGY, oru("S-3", "ACC-3")))[1].code == "AA"
    _, again = await intake.receive(store, TOPOLOGY, oru("S-3", "ACC-3"))
    assert again.code == "AA" and again.text.startswith("duplicate")
    _, unknown = await intake.receive(store, TOPOLOGY, oru("S-4", facility="RIS_ELSEWHERE"))
    assert unknown.code == "AE" and "RIS_ELSEWHERE" in unknown.text
    types = [r["type"] for r in await rows(store, "select type from audit_events order by seq")]
    assert types[-2:] == ["hl7.duplicate_seen", "hl7.message_rejected"]
    assert len(await rows(store, "select id from legacy_reports")) == 1


async def test_a_late_match_sets_an_existing_handoff_pending_again(store: Database) -> None:
    """The batched handoff is an insert or an update in one statement: a study registered
    again with a report whose handoff exists gets that row back to pending, not a second."""
    await intake.receive(store, TOPOLOGY, oru("S-5", "ACC-5"))  # unmatched: waits
    study_id = await add_study(store, "ACC-5", state="received")
    async with store.unit_of_work() as s:
        assert await match_waiting_reports(s, TOPOLOGY, study_id)
    async with store.unit_of_work() as s:
        await s.execute(text("update handoffs set status='sent'"))
        await s.execute(text("update studies set state='received' where id=:i"), {"i": study_id})
    async with store.unit_of_work() as s:
        assert await match_waiting_reports(s, TOPOLOGY, study_id)
    [job] = await rows(store, "select status from handoffs")  # one row, pending again
    assert job["status"] == "pending"


async def test_the_listener_without_a_pool_ping_survives_a_dropped_connection(
        database_url: str) -> None:
    """The listener's database does not ping before each message (one round trip fewer): a
    pooled connection the server dropped fails the first try, and the message is stored on a
    fresh connection, once, with the same ACK. Each stage of an accepted message is timed."""
    db = Database(database_url, pre_ping=False)
    try:
        async with db.unit_of_work() as s:
            s.add(Facility(id=uuid.uuid4(), name="north", hl7_sending_facility=SENDER))
        first, second = await add_study(db, "ACC-7"), await add_study(db, "ACC-8")
        with statements(db) as seen:
            assert (await intake.receive(db, TOPOLOGY, oru("S-7", "ACC-7")))[1].code == "AA"
        assert len(seen) == 4 and seen[-1] == "COMMIT", seen  # no ping among them
        async with db.read() as s:  # the pooled connection the next message will take
            pid = (await s.execute(text("select pg_backend_pid()"))).scalar_one()
        killer = Database(database_url)
        try:
            async with killer.unit_of_work() as s:
                assert (await s.execute(text("select pg_terminate_backend(:p)"), {"p": pid})
                        ).scalar_one()
        finally:
            await killer.close()
        before = _stage_counts()
        clock = StageClock(metrics.HL7_STAGE_SECONDS)
        _, verdict = await intake.receive(db, TOPOLOGY, oru("S-8", "ACC-8"), clock=clock)
        assert verdict.code == "AA" and "1 matched" in verdict.text, verdict
        after = _stage_counts()
        assert {k for k in after if after[k] > before.get(k, 0)} == {
            "parse", "connect", "read", "lock", "write", "commit"}
        states = await rows(db, "select id, state from studies where id in (:a, :b)",
                            a=first, b=second)
        assert {r["state"] for r in states} == {"legacy_report_completed"}
        assert len(await rows(db, "select id from hl7_messages where control_id='S-8'")) == 1
    finally:
        await db.close()


def _stage_counts() -> dict[str, float]:
    return {s.labels["stage"]: s.value for family in metrics.HL7_STAGE_SECONDS.collect()
            for s in family.samples if s.name.endswith("_count")}


async def test_the_relays_are_told_which_subjects_the_message_queued(store: Database) -> None:
    """One NOTIFY per transaction, naming its subjects: the workflow's relay wakes for the
    handoff job, the other processes' relays do not (sidecar_core/messaging/outbox.py)."""
    import psycopg

    await add_study(store, "ACC-9")
    listener = await psycopg.AsyncConnection.connect(store.libpq_url, autocommit=True)
    async with listener:
        await listener.execute(f"LISTEN {outbox.CHANNEL}")
        assert (await intake.receive(store, TOPOLOGY, oru("S-9", "ACC-9")))[1].code == "AA"
        notes = [n.payload async for n in listener.notifies(timeout=2.0)]
    assert notes == [outbox.notice([
        TOPOLOGY.audit_subject("study.state_changed"),
        TOPOLOGY.audit_subject("legacy_report.completed"),
        TOPOLOGY.subject("job.v1.handoff")])]
    bus: Any = SimpleNamespace(topology=TOPOLOGY)
    assert OutboxRelay.of_user(store, bus, "workflow").wants(notes[0])
    assert not OutboxRelay.of_user(store, bus, "ingest").wants(notes[0])
