"""Content-addressed, append-only object store in a folder (production: an S3-compatible bucket)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StagedObject:
    """An object written durably under a temporary name; `temp` is None when it already exists."""

    key: str
    target: Path
    temp: Path | None


class ObjectStore:
    """Stores bytes under their SHA-256; a write is durable (fsync) before it returns."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key_for(data: bytes) -> str:
        return "sha256/" + hashlib.sha256(data).hexdigest()

    def path(self, key: str) -> Path:
        algo, _, digest = key.partition("/")
        if (
            algo != "sha256"
            or len(digest) != 64
            or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise ValueError(f"not an object key: {key!r}")
        return self.root / algo / digest[:2] / digest[2:4] / digest

    def put(self, data: bytes, key: str | None = None) -> str:
        """Writes `data` once (existing content is never rewritten) and returns its key.

        `key`, when the caller already hashed the data, must be `key_for(data)`."""
        pending = self.stage(data, key)
        self.commit(pending)
        return pending.key

    def stage(self, data: bytes, key: str | None = None) -> StagedObject:
        """Writes `data` to a durable temporary file beside its final place (not yet visible)."""
        key = key or self.key_for(data)
        target = self.path(key)
        if target.exists():
            return StagedObject(key, target, None)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fdatasync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StagedObject(key, target, Path(tmp))

    def commit(self, staged: StagedObject) -> None:
        """Makes a staged object visible under its key, durably (rename + directory fsync)."""
        if staged.temp is None:
            return
        os.replace(staged.temp, staged.target)
        if self.fsync:
            dir_fd = os.open(staged.target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    def discard(staged: StagedObject) -> None:
        if staged.temp is not None:
            staged.temp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()
