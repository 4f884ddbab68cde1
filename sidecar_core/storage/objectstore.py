"""The object store in a folder (production: an S3-compatible bucket).

Two kinds of keys: `sha256/<hex>` for derived objects (assets, overlays, model inputs), one
content-addressed file each; `pack/...` for received DICOM objects, records in append-only pack
segments under `packs/` (see packstore.py: one data sync per received object, or per group of
objects received at the same time).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sidecar_core.storage.packstore import (
    DEFAULT_ALLOCATE_BYTES,
    DEFAULT_SEGMENT_BYTES,
    PackReader,
    PackWriter,
    is_pack_key,
)

OVERLAP_HASH_BYTES = 8 * 2**20  # objects from this size on are hashed while being written
INCOMING = ".incoming"  # under sha256/: large objects being written, before their key is known
_HASHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="objhash")


class RecordWriter(Protocol):
    """Writes received objects for one thread (PackWriter locally, one object each on S3)."""

    def append(self, data: bytes, digest: str | None = None) -> str: ...

    def keep(self) -> None: ...

    def close(self) -> None: ...


class ObjectStore:
    """Stores bytes under their SHA-256; a write is durable (fsync) before it returns.

    This class keeps them in a folder; s3store.S3ObjectStore in a bucket."""

    def __init__(self, root: Path, fsync: bool = True,
                 pack_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 pack_allocate_bytes: int = DEFAULT_ALLOCATE_BYTES) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.pack_segment_bytes = pack_segment_bytes
        self.pack_allocate_bytes = pack_allocate_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.packs = PackReader(self.root / "packs")

    def describe(self) -> str:
        return str(self.root)

    def pack_writer(self) -> RecordWriter:
        """A writer of received objects for one thread."""
        return PackWriter(self.packs.root, fsync=self.fsync,
                          segment_bytes=self.pack_segment_bytes,
                          allocate_bytes=self.pack_allocate_bytes)

    @staticmethod
    def key_for(data: bytes) -> str:
        return "sha256/" + hashlib.sha256(data).hexdigest()

    @staticmethod
    def check_key(key: str) -> str:
        """The digest of a content-addressed key; ValueError for anything else."""
        algo, _, digest = key.partition("/")
        if (
            algo != "sha256"
            or len(digest) != 64
            or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(f"not an object key: {key!r}")
        return digest

    def path(self, key: str) -> Path:
        digest = self.check_key(key)
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes) -> str:
        """Writes `data` once (existing content is never rewritten) and returns its key.

        The bytes are synced under a temporary name, renamed into place and the directory
        synced, so a key that exists always holds its complete content. A large object
        (a model input) is hashed on another thread while it is written, since its key is
        needed only for the rename."""
        if len(data) >= OVERLAP_HASH_BYTES:
            return self._put_large(data)
        key = self.key_for(data)
        target = self.path(key)
        if target.exists():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        self._commit(self._write_temp(target.parent, data), target)
        return key

    def _put_large(self, data: bytes, *, sync: bool = True, repair: bool = False) -> str:
        hashing = _HASHER.submit(self.key_for, data)
        incoming = self.root / "sha256" / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        try:
            tmp = self._write_temp(incoming, data, sync=sync)
        finally:
            key = hashing.result()
        target = self.path(key)
        if target.exists() and not (repair and not self._holds(target, data)):
            tmp.unlink(missing_ok=True)
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        self._commit(tmp, target, sync=sync)
        return key

    def put_unsynced(self, data: bytes, *, repair: bool = False) -> str:
        """Writes `data` whole under its key without waiting for the disk, and returns the key;
        `sync(key)` makes it durable. The bytes go to a temporary file renamed into place, so
        the key never shows half an object, and every process on this machine reads them at
        once (the page cache outlives a killed process; only a machine crash before `sync` can
        lose or damage them). With `repair`, an existing object whose bytes are not `data`
        (damaged by such a crash) is written again; without it, existing content is kept.

        The preprocess worker hands a model input to inference this way while its durable
        write goes on (docs/speed.md, issue 22 item 1)."""
        return self._put_large(data, sync=False, repair=repair)

    def sync(self, key: str) -> None:
        """Makes an object written by `put_unsynced` durable: its data, then its directory
        entry (a no-op when the store does not sync, and for S3, where a PUT is durable)."""
        if not self.fsync or is_pack_key(key):
            return
        path = self.path(key)
        for target in (path, path.parent):
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _holds(path: Path, data: bytes) -> bool:
        try:
            return path.stat().st_size == len(data) and path.read_bytes() == data
        except OSError:
            return False

    def _write_temp(self, directory: Path, data: bytes, sync: bool = True) -> Path:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync and sync:
                    fh.flush()
                    os.fdatasync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def _commit(self, tmp: Path, target: Path, sync: bool = True) -> None:
        """Renames the temporary file (synced, with `sync`) into place and syncs the directory
        (with `sync`; else `sync(key)` does it later)."""
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync and sync:
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def get(self, key: str) -> bytes:
        if is_pack_key(key):
            return self.packs.get(key)
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        if is_pack_key(key):
            return self.packs.exists(key)
        return self.path(key).exists()

    def delete(self, key: str) -> bool:
        """Removes a content-addressed object (retention, purge); True when one was removed. A
        pack record is not removed one by one: its row's deletion leaves it dead, and
        compaction (compaction.py) reclaims its bytes."""
        if is_pack_key(key):
            return False
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        if self.fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return True

    def scrub(self, key: str) -> bool:
        """Overwrites a pack record's bytes with zeros in place (a purge: the deletion request's
        bytes leave the disk now, even in a segment a writer still appends to; compaction later
        reclaims the space). Only for a record no row names. False when its segment is gone."""
        if not is_pack_key(key):
            return self.delete(key)
        return self.packs.scrub(key, fsync=self.fsync)
