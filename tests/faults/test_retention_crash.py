"""`sidecar retention run` killed (SIGKILL) at every step of compaction: after the journal, the
copy, the sync, inside the index switch before its commit, after the commit, after the old
segments' removal. The next run recovers; nothing live is lost (every live object reads back,
`sidecar objects verify` passes), nothing expired comes back (no row, no byte on disk). And
killed after a deletion's rows committed but before its objects went: the next pass deletes
them (retention_pending_objects)."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from sidecar_core.storage.compaction import JOURNAL, STEPS
from sidecar_core.storage.objectstore import ObjectStore
from tests.acceptance.stack import clean_env, run_cli
from tests.integration.test_retention import _pack_bytes, assert_expired_gone, assert_live_intact
from tests.retention_data import build
from workflow_svc.operations.retention import CRASH_AFTER_COMMIT

FAST = {"SIDECAR_RETENTION_COMPACT_MIN_AGE_S": "0", "SIDECAR_RETENTION_COMPACT_GRACE_S": "0",
        "SIDECAR_RETENTION_COMPACT_THRESHOLD": "0.75"}


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step(step: str, database_url: str, tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    store = ObjectStore(objects, fsync=False)
    built = build(database_url, store, studies=6, instances=4, size=25_000,
                  segment_bytes=300_000)
    args = ("retention", "run", "--database-url", database_url, "--objects-dir", str(objects),
            "--data-dir", str(tmp_path / "data"))
    killed = run_cli(*args, env=clean_env(SIDECAR_RETENTION_CRASH_AT=step, **FAST))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert (objects / "packs" / JOURNAL).exists(), "killed inside a compaction"
    # whatever the step, the index names only bytes that are there
    assert_live_intact(database_url, store, built)

    again = run_cli(*args, env=clean_env(**FAST))
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (objects / "packs" / JOURNAL).exists()
    assert_live_intact(database_url, store, built)
    assert_expired_gone(database_url, store, built, objects)
    with psycopg.connect(database_url) as conn:
        named = {r[0].split("/")[1] for r in conn.execute(
            "select object_key from instances").fetchall()}
    on_disk = {p.stem for p in (objects / "packs").glob("*.pack")}
    assert on_disk == named, "no orphan segment is left, none named is missing"
    verify = run_cli("objects", "verify", "--database-url", database_url, "--objects-dir",
                     str(objects), env=clean_env())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "12 objects checked" in verify.stdout and "12 intact" in verify.stdout


@pytest.mark.parametrize("command", ["retention", "purge"])
def test_killed_after_a_deletion_commits(command: str, database_url: str,
                                         tmp_path: Path) -> None:
    """Killed after a study's rows and audit event committed, before any of its objects went:
    the objects no row names are still on disk, listed; the next pass deletes them (a purge's
    pack records zeroed too), and nothing live is touched."""
    objects = tmp_path / "objects"
    store = ObjectStore(objects, fsync=False)
    built = build(database_url, store, studies=4, instances=3, size=20_000,
                  patient_of={0: "P-GONE"}, segment_bytes=10_000_000)
    common = ("--database-url", database_url, "--objects-dir", str(objects), "--data-dir",
              str(tmp_path / "data"))
    first = (("retention", "run") if command == "retention" else
             ("purge", "--patient", "P-GONE", "--facility", "ret_a", "--reason", "request 3",
              "--operator", "dpo"))
    killed = run_cli(*first, *common,
                     env=clean_env(SIDECAR_RETENTION_CRASH_AT=CRASH_AFTER_COMMIT, **FAST))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    victim = built.expired[0]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from instances where study_id = %s",
                            (victim,)).fetchone()[0] == 0  # type: ignore[index]
        pending = {r[0] for r in conn.execute(
            "select object_key from retention_pending_objects").fetchall()}
        event = "study.purged" if command == "purge" else "retention.deleted"
        assert conn.execute("select count(*) from audit_events where type = %s",
                            (event,)).fetchone()[0] == 1  # type: ignore[index]
    assert set(built.assets[victim]) <= pending
    assert all(store.exists(k) for k in built.assets[victim]), "the crash left them on disk"
    if command == "purge":
        assert set(built.keys[victim]) <= pending
        assert built.data[built.keys[victim][0]][:64] in _pack_bytes(objects)

    again = run_cli("retention", "run", *common, env=clean_env(**FAST))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished an interrupted deletion" in again.stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from retention_pending_objects")\
            .fetchone()[0] == 0  # type: ignore[index]
    assert not any(store.exists(k) for k in built.assets[victim])
    packs = _pack_bytes(objects)
    for key in built.keys[victim]:
        assert built.data[key][:64] not in packs
    assert_live_intact(database_url, store, built)
    verify = run_cli("objects", "verify", "--database-url", database_url, "--objects-dir",
                     str(objects), env=clean_env())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # the live studies' 2 × 3 received objects (study 2 expired, deleted by the second pass)
    assert "6 objects checked" in verify.stdout and "6 intact" in verify.stdout
