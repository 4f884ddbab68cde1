"""`put_unsynced` + `sync`: the model input is readable at once and durable later; a redone job
repairs one a machine crash damaged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar_core.storage import objectstore
from sidecar_core.storage.objectstore import ObjectStore

BIG = os.urandom(objectstore.OVERLAP_HASH_BYTES + 123)


def test_readable_at_once_then_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStore(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(objectstore.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(objectstore.os, "fdatasync",
                        lambda fd: (synced.append(fd), real_fsync(fd)))
    key = store.put_unsynced(BIG)
    assert key == ObjectStore.key_for(BIG)
    assert not synced, "nothing waited for the disk"
    assert store.get(key) == BIG
    assert not list((tmp_path / "sha256" / objectstore.INCOMING).iterdir()), "no temporary left"
    store.sync(key)
    assert len(synced) == 2, "the file, then its directory"


def test_existing_content_is_kept_unless_repairing(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    key = store.put_unsynced(BIG)
    path = store.path(key)
    path.write_bytes(BIG[: len(BIG) // 2])  # what a machine crash before the sync may leave
    assert store.put_unsynced(BIG) == key and path.read_bytes() != BIG
    assert store.put_unsynced(BIG, repair=True) == key
    assert path.read_bytes() == BIG
    inode = path.stat().st_ino
    assert store.put_unsynced(BIG, repair=True) == key
    assert path.stat().st_ino == inode, "intact content is not rewritten"


def test_a_store_without_fsync_syncs_nothing(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    key = store.put_unsynced(b"small")
    store.sync(key)
    assert store.get(key) == b"small"
