"""`sidecar up` on an S3-compatible object store (moto's standalone S3 server): one S3 object per
received object, the study goes through, and `sidecar objects verify` checks the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.stack import clean_env, run_cli
from tests.faults.conftest import running_stack
from tests.faults.harness import Faulty
from tests.moto_s3 import CREDENTIALS, S3Server, moto_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        server.client().create_bucket(Bucket="sidecar")
        yield server


@pytest.fixture(scope="module")
def env(s3: S3Server) -> dict[str, str]:
    return {"SIDECAR_OBJECT_STORE_URL": s3.url("sidecar", "site-a"), **CREDENTIALS}


@pytest.fixture(scope="module")
def up_s3(env: dict[str, str]) -> Iterator[Faulty]:
    with running_stack(env=env) as faulty:
        yield faulty


def test_a_study_through_an_s3_object_store(up_s3: Faulty, s3: S3Server, env: dict[str, str],
                                            tmp_path: Path) -> None:
    sent = up_s3.send("acc_north", up_s3.chest(tmp_path, seed=90, slices=48))
    assert up_s3.wait_final(sent.study_id) == "ready_for_review"
    up_s3.assert_exactly_once([sent.study_id])
    raw = [r["object_key"] for r in up_s3.rows(
        "select object_key from instances where study_id = %(id)s and source <> 'derived'",
        id=sent.study_id)]
    # The AI results as DICOM (SR) are indexed instances too, stored in the same bucket.
    derived = [r["object_key"] for r in up_s3.rows(
        "select object_key from instances where study_id = %(id)s and source = 'derived'",
        id=sent.study_id)]
    assets = [r["object_key"] for r in up_s3.rows(
        "select object_key from assets where study_id = %(id)s", id=sent.study_id)]
    in_bucket = set(s3.keys("sidecar", "site-a/"))
    assert len(raw) == 48 and len(set(raw)) == 48
    assert {f"site-a/{k}" for k in raw + derived + assets} <= in_bucket, \
        "one S3 object per object"
    local = up_s3.stack.data_dir / "objects"
    assert not list(local.rglob("*.pack")) and not list((local / "sha256").rglob("*"))

    data_dir = str(up_s3.stack.data_dir)
    verify = run_cli("objects", "verify", "--data-dir", data_dir, env=clean_env(**env))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    total = len(raw) + len(derived)
    assert f"{total} objects checked" in verify.stdout and f"{total} intact" in verify.stdout

    s3.client().put_object(Bucket="sidecar", Key=f"site-a/{raw[3]}", Body=b"not the object")
    s3.client().delete_object(Bucket="sidecar", Key=f"site-a/{raw[5]}")
    verify = run_cli("objects", "verify", "--data-dir", data_dir, env=clean_env(**env))
    assert verify.returncode == 1
    assert "1 missing, 1 damaged" in verify.stdout, verify.stdout
    assert raw[3] in verify.stdout and raw[5] in verify.stdout
