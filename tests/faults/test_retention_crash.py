"""`sidecar retention run` killed (SIGKILL) at every step of compaction: after the journal, the
copy, the sync, inside the index switch before its commit, after the commit, after the old
segments' removal. The next run recovers; nothing live is lost (every live object reads back,
`sidecar objects verify` passes), nothing expired comes back (no row, no byte on disk)."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from sidecar_core.storage.compaction import JOURNAL, STEPS
from sidecar_core.storage.objectstore import ObjectStore
from tests.acceptance.stack import clean_env, run_cli
from tests.integration.test_retention import assert_expired_gone, assert_live_intact
from tests.retention_data import build

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
