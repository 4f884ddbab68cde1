"""SIGKILL of each worker kind of `sidecar up` mid-job: the job is taken up again within one
ack wait by the restarted process, audited as a redelivery, and done exactly once."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.faults.harness import Faulty

# A killed worker's job must be running again within this (the ack wait is 30 s at most).
TAKEN_UP_WITHIN_S = 60


@contextmanager
def table_locked(up: Faulty, table: str) -> Iterator[psycopg.Connection]:
    """Holds an EXCLUSIVE lock on `table` (reads go on, writes wait) until the block ends."""
    with psycopg.connect(up.database_url) as conn:
        conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


def waiting_on(up: Faulty, table: str) -> bool:
    return bool(up.rows("select count(*) as n from pg_locks where not granted and "
                        "relation = %(t)s::regclass", t=table)[0]["n"])


def assert_redelivered(up: Faulty, study_id, consumer: str) -> dict:
    event = up.wait_audit(study_id, "job.redelivered", TAKEN_UP_WITHIN_S)
    assert event["context"]["consumer"] == consumer
    assert event["attempt"] == 2
    assert event["context"]["cause"].startswith("ack_wait_expired"), event
    return event


def test_preprocess_worker_killed_mid_job(up: Faulty, tmp_path: Path) -> None:
    folder = up.chest(tmp_path, seed=21)
    with table_locked(up, "assets"):
        sent = up.send("acc_north", folder)
        up.wait(lambda: waiting_on(up, "assets"), "the preprocess worker storing assets", 180)
        assert up.consumers()["preprocess-worker"][1] == 1, "the job is in hand"
        old = up.kill("preprocess")
    up.wait_restarted("preprocess", old)
    assert_redelivered(up, sent.study_id, "preprocess-worker")
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    rendered = up.audit(sent.study_id, "asset.series_rendered")
    assert [e["attempt"] for e in rendered] == [2], "the killed attempt stored nothing"


def test_normalizer_killed_mid_ai_run(up: Faulty, tmp_path: Path) -> None:
    folder = up.chest(tmp_path, seed=22)
    triton = up.server_pid("tritonserver")
    os.kill(triton, signal.SIGSTOP)  # inference hangs: the job stays in the normalizer's hands
    try:
        sent = up.send("acc_north", folder)
        up.wait_audit(sent.study_id, "ai_run.started", 240)
        old = up.kill("normalizer")
    finally:
        os.kill(triton, signal.SIGCONT)
    up.wait_restarted("normalizer", old)
    assert_redelivered(up, sent.study_id, "ai-run-worker")
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
    started = [e["attempt"] for e in up.audit(sent.study_id, "ai_run.started")]
    assert started == [1, 2]
    [run] = up.rows("select status, attempts from ai_runs where study_id = %(id)s",
                    id=sent.study_id)
    assert run == {"status": "completed", "attempts": 2}


def test_workflow_killed_mid_event(up: Faulty, tmp_path: Path) -> None:
    folder = up.chest(tmp_path, seed=23)
    with table_locked(up, "state_transitions"):
        sent = up.send("acc_north", folder)
        up.wait(lambda: waiting_on(up, "state_transitions"), "workflow recording 'received'",
                120)
        assert up.consumers()["workflow-events"][1] >= 1, "the event is in hand"
        old = up.kill("workflow")
    up.wait_restarted("workflow", old)
    assert_redelivered(up, sent.study_id, "workflow-events")
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])
