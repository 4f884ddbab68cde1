"""The handoff job on real NATS and PostgreSQL against a real webhook receiver (down, then up)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Response
from sqlalchemy import text

from protos.sidecar.events.v1 import events_pb2, report_events_pb2
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox, facility_context
from sidecar_core.store.models import Facility, Study
from tests.http_peers import WebhookReceiver, serve
from tests.servers import NatsServer, free_port
from workflow_svc.report_loop import handoff, legacy_reports
from workflow_svc.report_loop.handoff import HandoffWorker

pytestmark = pytest.mark.integration
SECRET = "webhook secret of the north hospital"
# The test receivers listen on loopback over http: listed, as an operator lists a local peer.
LOOPBACK = EgressPolicy.parse("127.0.0.1")


@dataclass
class Loop:
    db: Database
    bus: Bus
    topology: Topology
    stop: asyncio.Event
    port: int
    study_id: uuid.UUID

    async def rows(self, sql: str, **params: object) -> list[dict[str, Any]]:
        async with self.db.read() as s:
            return [dict(r._mapping) for r in (await s.execute(text(sql), params)).all()]

    async def audit(self, event_type: str) -> list[dict[str, Any]]:
        return await self.rows("select * from audit_events where type=:t and study_id=:s "
                               "order by seq", t=event_type, s=self.study_id)

    async def state(self) -> str:
        return (await self.rows("select state from studies where id=:i",
                                i=self.study_id))[0]["state"]

    async def wait(self, check: Callable[[], Awaitable[Any]], what: str,
                   timeout: float = 60.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if result := await check():
                return result
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


async def _loop(database_url: str, nats: NatsServer, max_deliver: int, secret: str = SECRET,
                egress: EgressPolicy = LOOPBACK, box: SecretBox | None = None
                ) -> AsyncIterator[Loop]:
    prefix = f"h{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix, prefix.upper(), overrides={
        "handoff-worker": {"max_deliver": max_deliver, "backoff_s": [0.3], "ack_wait_s": 10}})
    db = Database(database_url)
    port = free_port()
    study_id = uuid.uuid4()
    async with db.unit_of_work() as s:
        fid = uuid.uuid4()
        s.add(Facility(id=fid, name="north", handoff_url=f"http://127.0.0.1:{port}/sidecar/status",
                       handoff_secret=box.seal(secret, facility_context(
                           "north", "handoff_secret")) if box else secret))
        await s.flush()
        s.add(Study(id=study_id, facility_id=fid, accession="ACC-H", state="ready_for_review",
                    study_instance_uid="1.2.3.4.5", ingest_status="complete"))
    bus = await Bus.connect(nats.url, topology, auth=nats.auth())
    stop = asyncio.Event()
    tasks = [asyncio.create_task(OutboxRelay(db, bus, poll_s=0.2).run(stop)),
             asyncio.create_task(bus.consume(
                 topology.handoff_jobs(), HandoffWorker(db, topology, 2.0, egress, box).handle,
                 stop))]
    try:
        yield Loop(db, bus, topology, stop, port, study_id)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        await db.close()


@pytest.fixture()
async def loop(database_url: str, nats: NatsServer) -> AsyncIterator[Loop]:
    async for running in _loop(database_url, nats, max_deliver=30):
        yield running


@pytest.fixture()
async def short_loop(database_url: str, nats: NatsServer) -> AsyncIterator[Loop]:
    async for running in _loop(database_url, nats, max_deliver=2):
        yield running


async def _complete(loop: Loop) -> None:
    done = await legacy_reports.complete_report(
        loop.db, loop.topology, "north", legacy_reports.ReportInput(
            accession="ACC-H", report_reference="RPT-9", result_status="F",
            completed_at=datetime(2024, 3, 5, 11, 30, tzinfo=UTC), source="rpc"))
    assert done.matched


async def test_receiver_down_then_up(loop: Loop) -> None:
    receiver = WebhookReceiver(SECRET)
    await _complete(loop)
    assert await loop.state() == "legacy_report_completed"
    failed = await loop.wait(lambda: _at_least(loop.audit("handoff.attempted"), 2),
                             "two failed attempts")
    assert all(a["context"]["outcome"] == "failed" for a in failed)
    with serve(receiver.app(), loop.port):
        await loop.wait(lambda: _is(loop.state(), "status_recorded"), "status_recorded")
    [got] = receiver.received
    payload = json.loads(got["body"])
    assert payload["accession"] == "ACC-H" and payload["report"]["result_status"] == "F"
    assert payload["report"]["reference"] == "RPT-9"
    attempts = await loop.audit("handoff.attempted")
    digest = hashlib.sha256(got["body"]).hexdigest()
    assert [a["context"]["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert {a["context"]["payload_sha256"] for a in attempts} == {digest}
    assert attempts[-1]["context"]["http_status"] == 204
    assert attempts[0]["context"]["destination"] == f"http://127.0.0.1:{loop.port}/sidecar/status"
    assert await loop.audit("handoff.recorded") and not await loop.audit("handoff.sync_failed")
    [row] = await loop.rows("select status, attempts from handoffs")
    assert row == {"status": "recorded", "attempts": len(attempts)}


async def test_exhausted_goes_to_the_dlq_and_can_be_redriven(short_loop: Loop) -> None:
    loop = short_loop
    await _complete(loop)
    [failed] = await loop.wait(lambda: loop.audit("handoff.sync_failed"), "sync_failed")
    assert failed["context"]["attempts"] == 2
    letter = await _dead_letter(loop)
    assert letter.consumer == "handoff-worker" and letter.deliveries == 2
    assert await loop.state() == "legacy_report_completed"
    receiver = WebhookReceiver(SECRET)
    with serve(receiver.app(), loop.port):
        assert await handoff.redrive(loop.db, loop.topology, loop.study_id)
        await loop.wait(lambda: _is(loop.state(), "status_recorded"), "status_recorded")
    assert len(receiver.received) == 1 and await loop.audit("handoff.redriven")


async def test_refused_signature_fails_at_once(database_url: str, nats: NatsServer) -> None:
    async for loop in _loop(database_url, nats, max_deliver=30, secret="the wrong secret"):
        receiver = WebhookReceiver(SECRET)
        with serve(receiver.app(), loop.port):
            await _complete(loop)
            [failed] = await loop.wait(lambda lp=loop: lp.audit("handoff.sync_failed"),
                                       "sync_failed")
        assert failed["context"]["http_status"] == 401 and failed["context"]["attempts"] == 1
        assert receiver.refused == 1 and not receiver.received


async def test_a_sealed_secret_signs_like_the_plaintext_one(database_url: str,
                                                              nats: NatsServer) -> None:
    box = SecretBox(os.urandom(32))
    async for loop in _loop(database_url, nats, max_deliver=30, box=box):
        [stored] = await loop.rows("select handoff_secret from facilities")
        assert stored["handoff_secret"].startswith("sealed:v1:")
        receiver = WebhookReceiver(SECRET)
        with serve(receiver.app(), loop.port):
            await _complete(loop)
            await loop.wait(functools.partial(_is_recorded, loop), "recorded")
        assert len(receiver.received) == 1 and receiver.refused == 0


MARKER = "REPLY-MARKER-7c1e9a"


async def test_the_reply_body_never_reaches_the_audit(database_url: str,
                                                      nats: NatsServer) -> None:
    app = FastAPI()

    @app.post("/sidecar/status")
    async def refuse() -> Response:
        return Response(f"<html>{MARKER} patient Doe^Jane</html>", status_code=422)

    async for loop in _loop(database_url, nats, max_deliver=30):
        with serve(app, loop.port):
            await _complete(loop)
            [failed] = await loop.wait(functools.partial(loop.audit, "handoff.sync_failed"),
                                       "sync_failed")
        assert failed["context"]["http_status"] == 422
        size = len(f"<html>{MARKER} patient Doe^Jane</html>")
        assert failed["error_message"] == f"HTTP 422 ({size} bytes)"
        found = await loop.rows("select count(*) as n from audit_events where "
                                "context::text like :m or error_message like :m",
                                m=f"%{MARKER}%")
        assert found == [{"n": 0}]
        [row] = await loop.rows("select last_error from handoffs")
        assert MARKER not in row["last_error"]


async def test_an_unlisted_loopback_destination_is_refused_at_call_time(
        database_url: str, nats: NatsServer) -> None:
    # A row stored before the policy (or a name whose DNS changed since it was saved): the
    # worker checks again, sends nothing, fails the job at once and audits the refusal.
    async for loop in _loop(database_url, nats, max_deliver=30, egress=EgressPolicy()):
        receiver = WebhookReceiver(SECRET)
        with serve(receiver.app(), loop.port):
            await _complete(loop)
            [failed] = await loop.wait(functools.partial(loop.audit, "handoff.sync_failed"),
                                       "sync_failed")
        assert not receiver.received and receiver.refused == 0
        assert failed["context"]["attempts"] == 1
        assert "refused by the egress policy" in failed["error_message"]
        assert "loopback" in failed["error_message"]
        [refused] = await loop.audit("security.egress_refused")
        assert refused["error_class"] == "EGRESS_ADDRESS_REFUSED"
        assert refused["context"]["setting"] == "handoff_url"


async def _dead_letter(loop: Loop) -> events_pb2.DeadLetter:
    sub = await loop.bus.js.subscribe(f"{loop.topology.prefix}.dlq.>", ordered_consumer=True)
    try:
        msg = await sub.next_msg(timeout=20)
        return events_pb2.DeadLetter.FromString(msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _at_least(rows: Awaitable[list[Any]], n: int) -> list[Any] | None:
    got = await rows
    return got if len(got) >= n else None


async def _is_recorded(loop: Loop) -> bool:
    return await loop.state() == "status_recorded"


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def test_without_a_destination_the_status_is_recorded_here(loop: Loop) -> None:
    """A facility with no handoff URL: the job records the status itself (handoff `skipped`,
    the study `status_recorded`, its transition and audit events), once, and a redelivery of
    the job changes nothing."""
    async with loop.db.unit_of_work() as s:
        await s.execute(text("update facilities set handoff_url=null"))
    await _complete(loop)
    await loop.wait(lambda: _is(loop.state(), "status_recorded"), "status_recorded")
    [job] = await loop.rows("select status, destination, finished_at, job_id from handoffs "
                            "where study_id=:s", s=loop.study_id)
    assert job["status"] == "skipped" and job["finished_at"] is not None
    [study] = await loop.rows("select handoff_status from studies where id=:i",
                              i=loop.study_id)
    assert study["handoff_status"] == "skipped"
    [recorded] = await loop.audit("handoff.recorded")
    assert recorded["context"]["status"] == "skipped"
    assert recorded["facility"] == "north" and recorded["accession"] == "ACC-H"
    moves = await loop.rows("select from_state, to_state from state_transitions "
                            "where study_id=:s order by id", s=loop.study_id)
    assert moves[-1] == {"from_state": "legacy_report_completed",
                         "to_state": "status_recorded"}
    report_id = (await loop.rows("select id from legacy_reports"))[0]["id"]
    again = report_events_pb2.HandoffJob(study_id=str(loop.study_id),
                                         legacy_report_id=str(report_id), job_id=job["job_id"])
    delivery: Any = SimpleNamespace(data=again.SerializeToString(), attempt=2,
                                    is_last_attempt=False)
    await HandoffWorker(loop.db, loop.topology).handle(delivery)  # done already: no change
    assert len(await loop.audit("handoff.recorded")) == 1
