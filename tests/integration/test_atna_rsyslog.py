"""The IHE ATNA export against a real rsyslog: a login and a study's arrival, recorded in a
real PostgreSQL, reach the repository (TCP and TLS, RFC 5424 octet-counted) as messages the
PS3.15 A.5.1 schema accepts; with the repository down they wait in the table and are all
delivered, in order and once each, when it is back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sidecar_core import atna, audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from tests import atna_schema, pki, rsyslog
from tests.servers import free_port

pytestmark = pytest.mark.integration  # rsyslog: Makefile's SYSTEM_PACKAGES, never skipped
HEADER = re.compile(rb"^<85>1 \S+ \S+ sidecar \d+ IHE\+RFC-3881 - \xef\xbb\xbf")


def _messages(repo: rsyslog.Repository) -> list[atna_schema.ET.Element]:
    found = []
    for line in repo.lines():
        head = HEADER.match(line)
        assert head is not None, line[:120]
        found.append(atna_schema.validate(line[head.end():]))
    return found


async def _wait_for(repo: rsyslog.Repository, count: int, timeout: float = 15) -> None:
    for _ in range(int(timeout * 10)):
        if len(repo.lines()) >= count:
            return
        await asyncio.sleep(0.1)


async def _record_login_and_arrival(db: Database) -> None:
    topology = Topology()
    async with db.unit_of_work() as s:
        await audit.record(s, topology, "auth.login_succeeded", "workflow_svc", context={
            "username": "dr.a", "address": "10.1.2.3", "role": "radiologist"})
    async with db.unit_of_work() as s:
        await audit.record(s, topology, "study.received", "ingest_svc",
                           StudyRef("north", "ACC9", "1.2.826.0.1.3680043.9.1"),
                           context={"instances": 3})


async def _deliver(db: Database, sender: atna.Sender, repo: rsyslog.Repository,
                   count: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(atna.Forwarder(db, sender, "sidecar-test", "HOSP",
                                              poll_s=0.1).run(stop))
    await _wait_for(repo, count)
    stop.set()
    await task


def _check_login_and_arrival(messages: list[atna_schema.ET.Element]) -> None:
    assert [m.find("EventIdentification/EventID").attrib["csd-code"]  # type: ignore[union-attr]
            for m in messages] == ["110114", "110104"]
    login, arrival = messages
    assert login.find("ActiveParticipant").attrib["UserID"] == "dr.a"  # type: ignore[union-attr]
    study = arrival.find("ParticipantObjectIdentification")
    assert study is not None
    assert study.attrib["ParticipantObjectID"] == "1.2.826.0.1.3680043.9.1"


async def test_login_and_arrival_reach_rsyslog_over_tcp(database_url: str,
                                                        tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        await _record_login_and_arrival(db)
        with rsyslog.rsyslog(tmp_path) as repo:
            sender = atna.Sender(atna.Target("tcp", "127.0.0.1", repo.port))
            await _deliver(db, sender, repo, 2)
            await asyncio.sleep(0.3)  # nothing more arrives
            _check_login_and_arrival(_messages(repo))
    finally:
        await db.close()


async def test_login_and_arrival_reach_rsyslog_over_udp(database_url: str,
                                                        tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        await _record_login_and_arrival(db)
        with rsyslog.rsyslog(tmp_path, udp=True) as repo:
            forwarder = atna.forwarder_of(db, f"udp://127.0.0.1:{repo.port}")
            stop = asyncio.Event()
            task = asyncio.create_task(forwarder.run(stop))
            await _wait_for(repo, 2)
            stop.set()
            await task
            _check_login_and_arrival(_messages(repo))
    finally:
        await db.close()


async def test_login_and_arrival_reach_rsyslog_over_tls(database_url: str,
                                                        tmp_path: Path) -> None:
    ca, cert, key = pki.web_certificate(tmp_path, "Test audit repository CA")
    db = Database(database_url)
    try:
        await _record_login_and_arrival(db)
        with rsyslog.rsyslog(tmp_path / "tls", tls=(ca, cert, key)) as repo:
            forwarder = atna.forwarder_of(db, f"tls://127.0.0.1:{repo.port}", ca=ca)
            stop = asyncio.Event()
            task = asyncio.create_task(forwarder.run(stop))
            await _wait_for(repo, 2)
            stop.set()
            await task
            _check_login_and_arrival(_messages(repo))
        # a repository whose certificate the CA did not sign is refused, nothing is lost
        (tmp_path / "other").mkdir()
        other_ca, _, _ = pki.web_certificate(tmp_path / "other", "Another CA")
        async with db.unit_of_work() as s:
            await audit.record(s, Topology(), "auth.logout", "workflow_svc",
                               context={"username": "dr.a"})
        with rsyslog.rsyslog(tmp_path / "tls2", tls=(ca, cert, key)) as repo2:
            wrong = atna.forwarder_of(db, f"tls://127.0.0.1:{repo2.port}", ca=other_ca)
            with pytest.raises(OSError):
                await wrong.step()
            assert repo2.lines() == []
            assert (await wrong.pending())[0].type == "auth.logout"
    finally:
        await db.close()


async def test_repository_down_then_back_delivers_all_in_order_once(database_url: str,
                                                                   tmp_path: Path) -> None:
    db = Database(database_url)
    port = free_port()
    topology = Topology()
    stop = asyncio.Event()
    # one forwarder throughout: its connection outlives the first repository
    forwarder = atna.Forwarder(db, atna.Sender(atna.Target("tcp", "127.0.0.1", port),
                                               timeout_s=2),
                               "sidecar-test", retry_s=0.2, poll_s=0.1)
    task = asyncio.create_task(forwarder.run(stop))
    try:
        with rsyslog.rsyslog(tmp_path / "a", port=port, out=tmp_path / "got.log") as repo:
            async with db.unit_of_work() as s:
                await audit.record(s, topology, "auth.login_succeeded", "workflow_svc",
                                   context={"username": "dr.a", "n": 0})
            await _wait_for(repo, 1)
            assert len(repo.lines()) == 1
        await asyncio.sleep(0.3)
        # the repository is down: events keep being recorded, sending fails, the backlog grows
        failures = metrics.AUDIT_SYSLOG_FAILURES._value.get()
        for n in range(1, 8):
            async with db.unit_of_work() as s:
                await audit.record(s, topology, "review.study_opened", "review_gateway",
                                   StudyRef("north", f"A{n}", f"1.2.3.{n}"),
                                   context={"username": "dr.a", "n": n})
        for _ in range(100):
            if metrics.AUDIT_SYSLOG_FAILURES._value.get() >= failures + 2:
                break
            await asyncio.sleep(0.1)
        assert metrics.AUDIT_SYSLOG_FAILURES._value.get() >= failures + 2
        assert metrics.AUDIT_SYSLOG_BACKLOG._value.get() == 7
        # back up (same port, same file): everything that waited arrives, with a second
        # forwarder (a workflow replica) running too: one sender at a time, nothing twice
        with rsyslog.rsyslog(tmp_path / "b", port=port, out=tmp_path / "got.log") as repo:
            replica = asyncio.create_task(atna.Forwarder(
                db, atna.Sender(atna.Target("tcp", "127.0.0.1", port)), "sidecar-test",
                retry_s=0.2, poll_s=0.05).run(stop))
            await _wait_for(repo, 8)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(task, replica)
            messages = _messages(repo)
        studies = [m.find("ParticipantObjectIdentification").attrib[  # type: ignore[union-attr]
            "ParticipantObjectID"] for m in messages[1:]]
        assert studies == [f"1.2.3.{n}" for n in range(1, 8)]
        assert len(messages) == 8
        assert metrics.AUDIT_SYSLOG_BACKLOG._value.get() == 0
    finally:
        stop.set()
        await task
        await db.close()
