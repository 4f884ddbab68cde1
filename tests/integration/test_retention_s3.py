"""Retention and purge on an S3-compatible object store (moto's standalone server): the
objects of the deleted studies leave the bucket by key, the others stay, through the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sidecar_core.storage.s3store import S3ObjectStore
from tests.acceptance.stack import clean_env, run_cli
from tests.moto_s3 import CREDENTIALS, S3Server, moto_server
from tests.retention_data import build

pytestmark = pytest.mark.integration


@pytest.fixture()
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        server.client().create_bucket(Bucket="sidecar")
        yield server


def test_retention_and_purge_on_s3(s3: S3Server, database_url: str, tmp_path: Path) -> None:
    url = s3.url("sidecar", "site-a")
    store = S3ObjectStore("sidecar", "site-a", s3.endpoint, client=s3.client())
    built = build(database_url, store, studies=4, instances=3, size=5_000,
                  patient_of={0: "P1", 1: "P1", 2: "P2", 3: "P2"})
    every = {f"site-a/{k}" for k in built.data}
    assert set(s3.keys("sidecar", "site-a/")) == every
    env = clean_env(SIDECAR_OBJECT_STORE_URL=url, **CREDENTIALS)
    common = ("--database-url", database_url, "--data-dir", str(tmp_path / "data"))

    ran = run_cli("retention", "run", *common, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    expired = {f"site-a/{k}" for s in built.expired for k in built.keys[s] + built.assets[s]}
    assert set(s3.keys("sidecar", "site-a/")) == every - expired

    purged = run_cli("purge", "--patient", "P2", "--facility", "ret_a", "--reason",
                     "deletion request 7", "--operator", "dpo", *common, env=env)
    assert purged.returncode == 0, purged.stdout + purged.stderr
    p2_live = built.live[1]  # study 3 (P2, not expired)
    gone = expired | {f"site-a/{k}" for k in built.keys[p2_live] + built.assets[p2_live]}
    assert set(s3.keys("sidecar", "site-a/")) == every - gone
    kept = built.live[0]
    for key in built.keys[kept] + built.assets[kept]:
        assert store.get(key) == built.data[key]
    with psycopg.connect(database_url) as conn:
        events = conn.execute("select type, context->>'reason' from audit_events where type "
                              "in ('retention.deleted', 'study.purged') order by seq").fetchall()
    assert events.count(("study.purged", "deletion request 7")) == 2  # studies 2 and 3 of P2
    verify = run_cli("objects", "verify", *common, env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "3 objects checked" in verify.stdout

    refused = run_cli("purge", "--patient", "P2", "--facility", "ret_a", "--reason", "again",
                      *common, env=env)
    assert refused.returncode != 0 and "no study of facility" in refused.stderr
