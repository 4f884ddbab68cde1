"""SIGKILL of each worker kind of `sidecar up` mid-job: the job is taken up again within one
ack wait by the restarted process (in under 15 s from the kill), audited as a redelivery, and
done exactly once; a live job slower than the ack wait is not taken over."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from sidecar_core.messaging.subjects import ACK_WAIT_S
from tests.faults.harness import Faulty

# A killed worker's job must be running again within this from the kill (issue 22 item 5): the
# ack wait (10 s) after the worker's last heartbeat, the supervisor's restart and the new
# process's start.
TAKEN_UP_WITHIN_S = 15.0


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


def kill(up: Faulty, name: str) -> tuple[int, datetime]:
    """SIGKILL of one service's process: its pid and when."""
    at = datetime.now(UTC)
    return up.kill(name), at


def assert_redelivered(up: Faulty, study_id, consumer: str, killed_at: datetime) -> dict:
    event = up.wait_audit(study_id, "job.redelivered", 120)
    assert event["context"]["consumer"] == consumer
    assert event["attempt"] == 2
    assert event["context"]["cause"].startswith("ack_wait_expired"), event
    # `at` is the start of the transaction of the new attempt (the audit row's now())
    [row] = up.rows("select at from audit_events where study_id = %(id)s and "
                    "type = 'job.redelivered' and context->>'consumer' = %(c)s "
                    "order by seq limit 1", id=study_id, c=consumer)
    recovery = (row["at"] - killed_at).total_seconds()
    print(f"{consumer}: killed worker's job taken up again {recovery:.1f} s after the SIGKILL "
          f"(ack wait {ACK_WAIT_S:.0f} s, limit {TAKEN_UP_WITHIN_S:.0f} s)")
    assert 0 < recovery < TAKEN_UP_WITHIN_S, f"{consumer}: recovery took {recovery:.1f} s"
    return event


def test_preprocess_worker_killed_mid_job(up: Faulty, tmp_path: Path) -> None:
    folder = up.chest(tmp_path, seed=21)
    with table_locked(up, "assets"):
        sent = up.send("acc_north", folder)
        up.wait(lambda: waiting_on(up, "assets"), "the preprocess worker storing assets", 180)
        assert up.consumers()["preprocess-worker"][1] == 1, "the job is in hand"
        old, killed_at = kill(up, "preprocess")
    up.wait_restarted("preprocess", old)
    assert_redelivered(up, sent.study_id, "preprocess-worker", killed_at)
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
        old, killed_at = kill(up, "normalizer")
    finally:
        os.kill(triton, signal.SIGCONT)
    up.wait_restarted("normalizer", old)
    assert_redelivered(up, sent.study_id, "ai-run-worker", killed_at)
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
        old, killed_at = kill(up, "workflow")
    up.wait_restarted("workflow", old)
    assert_redelivered(up, sent.study_id, "workflow-events", killed_at)
    assert up.wait_final(sent.study_id) == "ready_for_review"
    up.assert_exactly_once([sent.study_id])


def test_a_live_job_slower_than_the_ack_wait_is_not_taken_over(up: Faulty, tmp_path: Path
                                                                ) -> None:
    """The preprocess worker is held (alive, heartbeating) on a table lock for three ack waits:
    its job stays in its hands, no second worker takes it, and it completes as attempt 1."""
    folder = up.chest(tmp_path, seed=24)
    with table_locked(up, "assets"):
        sent = up.send("acc_north", folder)
        up.wait(lambda: waiting_on(up, "assets"), "the preprocess worker storing assets", 180)
        held_from = time.monotonic()
        while time.monotonic() - held_from < 3 * ACK_WAIT_S:
            assert up.consumers()["preprocess-worker"] == (0, 1), "one job, in one hand"
            time.sleep(1.0)
        assert waiting_on(up, "assets"), "the job was held for the whole time"
    assert up.wait_final(sent.study_id) == "ready_for_review"
    assert up.audit(sent.study_id, "job.redelivered") == [], "a live job was taken over"
    rendered = up.audit(sent.study_id, "asset.series_rendered")
    assert [e["attempt"] for e in rendered] == [1]
    up.assert_exactly_once([sent.study_id])
