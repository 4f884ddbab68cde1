"""The S3 object store backend against moto's standalone S3 server (real HTTP, S3 API)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.s3store import S3ObjectStore, open_object_store
from tests.moto_s3 import CREDENTIALS, S3Server, moto_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with moto_server() as server:
            server.client().create_bucket(Bucket="objects")
            yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_url_chooses_the_backend(s3: S3Server, tmp_path) -> None:
    store = open_object_store(s3.url("objects", "site-a"), tmp_path)
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix) == ("objects", "site-a/")
    local = open_object_store("", tmp_path / "objects")
    assert type(local) is ObjectStore and local.root == tmp_path / "objects"
    with pytest.raises(ValueError):
        S3ObjectStore.from_url("s3:///no-bucket")


def test_put_get_exists_and_one_object_per_received_object(s3: S3Server, tmp_path) -> None:
    store = S3ObjectStore.from_url(s3.url("objects", "t1"))
    key = store.put(b"derived asset")
    assert key == "sha256/" + hashlib.sha256(b"derived asset").hexdigest()
    assert store.get(key) == b"derived asset" and store.exists(key)
    writer = store.pack_writer()
    received = [f"dicom object {i}".encode() * 100 for i in range(5)]
    keys = [writer.append(data) for data in received]
    for _ in keys:
        writer.keep()
    writer.close()
    assert [store.get(k) for k in keys] == received
    assert sorted(s3.keys("objects", "t1/")) == sorted(f"t1/{k}" for k in [key, *keys])
    missing = "sha256/" + "0" * 64
    assert not store.exists(missing)
    with pytest.raises(FileNotFoundError):
        store.get(missing)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_a_store_that_refuses_writes_raises_oserror(s3: S3Server) -> None:
    store = S3ObjectStore.from_url(s3.url("no-such-bucket"))
    with pytest.raises(OSError, match="NoSuchBucket"):
        store.put(b"x")
    with pytest.raises(OSError, match="NoSuchBucket"):
        store.pack_writer().append(b"y")
