"""The audit hash chain on a real PostgreSQL migrated by Alembic: concurrent emitters keep valid
chains, `sidecar audit verify` names the first event changed, deleted or moved by the owner,
and the services' role may only insert and read audit rows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from sidecar_core import audit, audit_chain
from sidecar_core.audit import StudyRef
from sidecar_core.audit_spool import AuditSpool
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.grants import APP_ROLE
from sidecar_core.store.migrate import upgrade

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _verify(url: str) -> audit_chain.Verdict:
    with psycopg.connect(url) as conn:
        return audit_chain.verify(conn)


def _cli_verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar_app.cli", "audit", "verify",
                           "--database-url", url], capture_output=True, text=True, timeout=120,
                          cwd=REPO)


async def _emit(db: Database, topology: Topology, writer: int, transactions: int,
                per_transaction: int) -> None:
    for t in range(transactions):
        async with db.unit_of_work() as session:
            for e in range(per_transaction):
                await audit.record(session, topology, "review.study_opened", f"user{writer}",
                                   StudyRef("north", f"A{writer}", f"1.2.{writer}.{t}"),
                                   context={"writer": writer, "t": t, "e": e,
                                            "note": "=é \"quoted\""})


async def _storm(url: str, writers: int, transactions: int, per_transaction: int) -> float:
    topology = Topology()
    dbs = [Database(url, pool_size=1) for _ in range(writers)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(_emit(db, topology, w, transactions, per_transaction)
                               for w, db in enumerate(dbs)))
        return time.perf_counter() - started
    finally:
        for db in dbs:
            await db.close()


async def test_concurrent_emitters_and_a_spool_replay_keep_valid_chains(
        database_url: str, tmp_path: Path) -> None:
    writers, transactions, per = 8, 25, 2
    await _storm(database_url, writers, transactions, per)
    # events recorded during an outage, stored later with their original time, chain too
    spool = AuditSpool(tmp_path / "spool")
    for i in range(3):
        spool.keep({"event_id": str(uuid.uuid4()), "at": "2026-12-01T08:00:00.000001+00:00",
                    "event_type": "study.receive_failed", "actor": "ingest",
                    "facility": "north", "accession": "", "study_instance_uid": f"1.9.{i}",
                    "study_id": "", "error_class": "OSError", "context": {"i": i}})
    db = Database(database_url)
    try:
        assert await spool.replay(db, Topology()) == 3
        async with db.read() as s:
            chains = (await s.execute(text(
                "SELECT count(DISTINCT chain), count(*) FILTER (WHERE hash IS NULL) "
                "FROM audit_events"))).one()
            spooled = (await s.execute(text(
                "SELECT chain_pos, at FROM audit_events WHERE type = 'study.receive_failed'")
            )).all()
    finally:
        await db.close()
    verdict = _verify(database_url)
    assert verdict.ok, verdict.line()
    assert verdict.checked == writers * transactions * per + 3
    assert chains[0] > 1 and chains[1] == 0  # several partitions used, every event linked
    assert all(r.chain_pos and r.at.isoformat() == "2026-12-01T08:00:00.000001+00:00"
               for r in spooled)
    done = _cli_verify(database_url)
    assert done.returncode == 0, done.stderr
    assert f"{verdict.checked} events checked" in done.stdout


def _events(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return list(cur.execute("SELECT id, seq, type, chain, chain_pos FROM audit_events "
                                "ORDER BY chain, chain_pos"))


def _owner(url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)


async def _some_events(url: str, n: int) -> list[dict[str, Any]]:
    db = Database(url, pool_size=1)
    try:
        for i in range(n):  # one connection: every event in one chain, one after another
            async with db.unit_of_work() as session:
                await audit.record(session, Topology(), "review.finding_accepted", "dr.a",
                                   StudyRef("north", "A1", f"1.2.{i}"), context={"i": i})
    finally:
        await db.close()
    return _events(url)


async def test_verify_names_an_event_the_owner_changed(database_url: str) -> None:
    events = await _some_events(database_url, 5)
    victim = events[2]
    _owner(database_url, "UPDATE audit_events SET actor = 'someone.else' WHERE id = %s",
           victim["id"])
    done = _cli_verify(database_url)
    assert done.returncode == 1
    assert (f"audit chain broken at event {victim['id']} (seq {victim['seq']}, "
            f"type review.finding_accepted, at ") in done.stdout
    assert "changed after it was stored" in done.stdout


async def test_verify_finds_deleted_and_moved_events(database_url: str) -> None:
    events = await _some_events(database_url, 6)
    # a deleted event: the one after it is named
    _owner(database_url, "DELETE FROM audit_events WHERE id = %s", events[1]["id"])
    verdict = _verify(database_url)
    assert not verdict.ok and verdict.event is not None
    assert verdict.event["id"] == events[2]["id"]
    # the last event deleted too (after putting nothing back): the head no longer matches
    _owner(database_url, "DELETE FROM audit_events WHERE id = %s", events[5]["id"])
    assert not _verify(database_url).ok


async def test_verify_finds_reordered_events(database_url: str) -> None:
    events = await _some_events(database_url, 4)
    a, b = events[1], events[2]
    _owner(database_url, "UPDATE audit_events SET chain_pos = -1 WHERE id = %s", a["id"])
    _owner(database_url, "UPDATE audit_events SET chain_pos = %s WHERE id = %s",
           a["chain_pos"], b["id"])
    _owner(database_url, "UPDATE audit_events SET chain_pos = %s WHERE id = %s",
           b["chain_pos"], a["id"])
    verdict = _verify(database_url)
    assert not verdict.ok and verdict.event is not None and verdict.event["id"] == b["id"]


def _as_app_role(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() \
                is None:
            conn.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN')
    upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))  # grants the role
    return make_url(url).set(username=APP_ROLE).render_as_string(hide_password=False)


async def test_the_services_role_may_only_insert_and_read_audit_rows(database_url: str) -> None:
    app_url = _as_app_role(database_url)
    await _some_events(app_url, 3)  # the role's events are linked by the owner's trigger
    assert _verify(app_url).ok
    refused = [
        "UPDATE audit_events SET actor = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_chain_heads SET pos = 0",
        "DELETE FROM audit_chain_heads",
        "INSERT INTO audit_chain_heads (chain) VALUES (99)",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_chain_link",
        "UPDATE alembic_version SET version_num = 'x'",
        "SET session_replication_role = replica",  # would skip the chain's trigger
    ]
    for sql in refused:
        with psycopg.connect(app_url) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(sql)
        assert isinstance(err.value, psycopg.errors.InsufficientPrivilege) or \
            "must be owner" in str(err.value), (sql, err.value)
    # a chain the role names itself changes nothing: the trigger picks a real one
    with psycopg.connect(app_url) as conn:
        for chain in ("99", "x; DROP TABLE audit_events"):
            conn.execute("SELECT set_config('sidecar.audit_chain', %s, false)", (chain,))
            conn.execute(audit._INSERT_SYNC, {
                **audit.prepare(Topology(), "probe", "app").row, "context": "{}"})
            conn.commit()
    # the rest of the schema is the services' to write
    with psycopg.connect(app_url) as conn:
        conn.execute("INSERT INTO idempotent_requests (request_id, method, response, "
                     "created_at) VALUES ('r1', 'm', '', now())")
        conn.execute("UPDATE idempotent_requests SET method = 'n' WHERE request_id = 'r1'")
        conn.execute("DELETE FROM idempotent_requests WHERE request_id = 'r1'")
    assert _verify(app_url).ok


async def test_what_the_chain_costs_under_concurrent_writers(database_url: str) -> None:
    """A figure, not a limit: the same storm with the chain's trigger and without it, twice
    each, alternating (so neither pays the warm-up alone)."""
    writers, transactions, per = 8, 40, 1
    chained = plain = 0.0
    for _ in range(2):
        chained += await _storm(database_url, writers, transactions, per)
        _owner(database_url, "ALTER TABLE audit_events DISABLE TRIGGER audit_chain_link")
        try:
            plain += await _storm(database_url, writers, transactions, per)
        finally:
            _owner(database_url, "ALTER TABLE audit_events ENABLE TRIGGER audit_chain_link")
    n = 2 * writers * transactions
    with psycopg.connect(database_url) as conn:  # the plain storms really ran unchained
        assert conn.execute("SELECT count(*) FILTER (WHERE hash IS NULL), count(*) "
                            "FROM audit_events").fetchone() == (n, 2 * n)
    print(json.dumps({"transactions": n, "writers": writers,
                      "chained_ms_per_tx": round(chained / n * 1000, 2),
                      "plain_ms_per_tx": round(plain / n * 1000, 2)}))
    assert chained < plain * 10 + 5  # a deadlock or a lock convoy would show here


def test_events_stored_before_the_chain_become_the_start_of_chain_0(pg_admin_url: str) -> None:
    from tests.servers import fresh_database

    with fresh_database(pg_admin_url) as url:
        sqlalchemy_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        upgrade(sqlalchemy_url, "0102")  # a data dir from before the chain
        with psycopg.connect(url) as conn:
            for i in range(4):
                event = audit.prepare(Topology(), "study.received", "ingest",
                                      StudyRef("north", f"A{i}", f"1.2.{i}"), context={"i": i})
                conn.execute(audit._INSERT_SYNC, {**event.row,
                                                  "context": json.dumps(event.row["context"])})
            conn.commit()
        upgrade(sqlalchemy_url)
        with psycopg.connect(url) as conn:
            linked = conn.execute("SELECT seq, chain, chain_pos FROM audit_events "
                                  "ORDER BY seq").fetchall()
        assert [(chain, pos) for _, chain, pos in linked] == [(0, 1), (0, 2), (0, 3), (0, 4)]
        verdict = _verify(url)
        assert verdict.ok and verdict.checked == 4, verdict.line()
