"""Append-only pack segments for received DICOM objects: one data sync per object or group.

A received object is appended to its writer's current segment file behind a 48-byte record
header and synced with one fdatasync; no file or directory is created per object. Creating a
file per object (as the content-addressed store does) costs a file-system journal commit for the
new inode, another for the rename and a directory sync; appending into a segment whose space was
allocated ahead costs only the data write. The index row (PostgreSQL) is the catalogue: it
holds the object's key, and the key alone locates and verifies the bytes:

    pack/<segment>/<offset>/<length>/<sha256 hex>

Record layout at `offset - 48`: b"SCPK", u32 version (1), u64 length, 32-byte SHA-256, then the
object bytes as received, so `scan()` can list and verify a segment without the index.

Crash safety: a writer syncs the record before the caller commits the row that names it, and a
writer never reuses a segment another process wrote, so a crash leaves at most unreferenced bytes
at the end of a segment, never a row pointing at missing or partial bytes. A record whose row was
not committed (a duplicate, a rejected object) is overwritten by the writer's next record, unless
it was kept at once (a writer shared by threads keeps every record).

A writer holds an exclusive flock on its open segment; compaction (compaction.py) rewrites only
segments nobody holds, so a segment being appended to is never moved.

A writer is not thread-safe: the Receiver shares one among its threads behind a lock, with one
fdatasync for the records appended meanwhile (ingest_svc/study/group_commit.py); segments roll
over at `segment_bytes`; space is allocated `allocate_bytes` at a time (writing into allocated
space syncs faster than growing the file) and the unused rest is given back on close.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"SCPK"
VERSION = 1
HEADER = struct.Struct("<4sIQ32s")  # magic, version, length, sha256
PREFIX = "pack/"
DEFAULT_SEGMENT_BYTES = 1 << 30
DEFAULT_ALLOCATE_BYTES = 16 << 20


class PackError(Exception):
    """A pack key that does not parse, or bytes that do not match their key."""


@dataclass(frozen=True)
class PackKey:
    segment: str
    offset: int
    length: int
    sha256: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.segment}/{self.offset}/{self.length}/{self.sha256}"

    @classmethod
    def parse(cls, key: str) -> PackKey:
        parts = key[len(PREFIX):].split("/") if key.startswith(PREFIX) else []
        if len(parts) != 4:
            raise PackError(f"not a pack key: {key!r}")
        segment, offset, length, digest = parts
        if (
            not _is_hex(segment, 16)
            or not _is_hex(digest, 64)
            or not offset.isdigit()
            or not length.isdigit()
        ):
            raise PackError(f"not a pack key: {key!r}")
        return cls(segment, int(offset), int(length), digest)


def is_pack_key(key: str) -> bool:
    return key.startswith(PREFIX)


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


class PackWriter:
    """Appends records to this writer's own segments; not thread-safe (one per thread)."""

    def __init__(
        self,
        root: Path,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        allocate_bytes: int = DEFAULT_ALLOCATE_BYTES,
    ) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.allocate_bytes = allocate_bytes
        self._fd = -1
        self._segment = ""
        self._end = 0  # where the next record starts
        self._allocated = 0
        self._pending = 0  # size of the last record, until kept

    def append(self, data: bytes, digest: str | None = None, sync: bool = True) -> str:
        """Writes one record (synced when `fsync`, unless `sync` is False: then the caller
        syncs it through `sync_handle` before relying on it) and returns its key.

        The record stays only if the caller `keep`s it; the next `append` otherwise overwrites
        it. `digest` is the SHA-256 hex of `data` when the caller already has it.
        """
        digest = digest or hashlib.sha256(data).hexdigest()
        record = HEADER.size + len(data)
        if self._fd < 0 or (self._end > 0 and self._end + record > self.segment_bytes):
            self._open_segment()
        if self._end + record > self._allocated:
            grow = max(self.allocate_bytes, self._end + record - self._allocated)
            os.posix_fallocate(self._fd, self._allocated, grow)
            self._allocated += grow
        header = HEADER.pack(MAGIC, VERSION, len(data), bytes.fromhex(digest))
        written = os.pwritev(self._fd, [header, data], self._end)
        rest = memoryview(data)[max(0, written - HEADER.size):]
        while written < record:  # a partial write (a very large object): go on from there
            if written < HEADER.size:
                raise OSError(f"short write to pack segment {self._segment}")
            n = os.pwrite(self._fd, rest, self._end + written)
            if n <= 0:
                raise OSError(f"short write to pack segment {self._segment}")
            written += n
            rest = rest[n:]
        if self.fsync and sync:
            os.fdatasync(self._fd)
        self._pending = record
        return str(PackKey(self._segment, self._end + HEADER.size, len(data), digest))

    def sync_handle(self) -> int:
        """A duplicate of the current segment's descriptor (the caller closes it), or -1: an
        fdatasync on it makes every record written so far durable, even once this writer has
        moved on to another segment (closing a segment syncs it too)."""
        return os.dup(self._fd) if self._fd >= 0 and self.fsync else -1

    def keep(self) -> None:
        """Makes the last appended record permanent (its row is about to be committed)."""
        self._end += self._pending
        self._pending = 0

    def close(self) -> None:
        """Gives back the segment's unused allocation (kept records stay as they are)."""
        if self._fd >= 0:
            try:
                os.ftruncate(self._fd, self._end)
                if self.fsync:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def _open_segment(self) -> None:
        self.close()
        self.root.mkdir(parents=True, exist_ok=True)
        segment = uuid.uuid4().hex[:16]
        # made under a name compaction never lists, locked, then renamed: compaction
        # (compaction.py) skips a locked segment and so never sees this one unlocked (it would
        # take a new, empty segment for one to remove)
        fresh = self.root / f"{segment}.pack.new"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the segment is open
        os.rename(fresh, self.root / f"{segment}.pack")
        os.posix_fallocate(fd, 0, self.allocate_bytes)
        if self.fsync:  # the segment's name and its allocation survive a crash
            os.fsync(fd)
            _sync_dir(self.root)
        self._fd, self._segment = fd, segment
        self._end, self._allocated, self._pending = 0, self.allocate_bytes, 0


class PackReader:
    """Reads records by key and verifies them against the key's length and digest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, segment: str) -> Path:
        return self.root / f"{segment}.pack"

    def get(self, key: str) -> bytes:
        k = PackKey.parse(key)
        try:
            fd = os.open(self.path(k.segment), os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"pack segment {k.segment} of {key} is missing") from None
        try:
            data = os.pread(fd, k.length, k.offset)
        finally:
            os.close(fd)
        if len(data) != k.length or hashlib.sha256(data).hexdigest() != k.sha256:
            raise PackError(f"object {key} is damaged: its bytes do not match the key")
        return data

    def exists(self, key: str) -> bool:
        k = PackKey.parse(key)
        try:
            return self.path(k.segment).stat().st_size >= k.offset + k.length
        except FileNotFoundError:
            return False

    def scrub(self, key: str, fsync: bool = True) -> bool:
        """Zeros a dead record's data (its header stays, so a scan still finds the next record;
        the record reads as damaged). Writers never write before their kept end, so this is safe
        beside one appending to the same segment. False when the segment is gone."""
        k = PackKey.parse(key)
        try:
            fd = os.open(self.path(k.segment), os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size < k.offset + k.length:
                return False
            os.pwrite(fd, bytes(k.length), k.offset)
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        return True

    def scan(self, segment: str) -> Iterator[tuple[str, bool]]:
        """(key, intact) for every record of a segment, in order, up to the first gap."""
        with self.path(segment).open("rb") as fh:
            offset = 0
            while True:
                fh.seek(offset)
                head = fh.read(HEADER.size)
                if len(head) < HEADER.size:
                    return
                magic, version, length, digest = HEADER.unpack(head)
                if magic != MAGIC or version != VERSION:
                    return
                data = fh.read(length)
                key = PackKey(segment, offset + HEADER.size, length, digest.hex())
                yield str(key), (len(data) == length
                                 and hashlib.sha256(data).digest() == digest)
                offset += HEADER.size + length


def sync_dir(path: Path) -> None:
    """fsync a directory, so that names created or removed in it survive a crash."""
    _sync_dir(path)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
