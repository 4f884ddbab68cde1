"""Pack segments: records located and verified by key, unkept records reused, rollover, scan."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sidecar_core.storage.objectstore import OVERLAP_HASH_BYTES, ObjectStore
from sidecar_core.storage.packstore import HEADER, PackError, PackKey, PackReader, PackWriter


def test_appended_records_read_back_by_key(tmp_path: Path) -> None:
    writer, reader = PackWriter(tmp_path), PackReader(tmp_path)
    blobs = [os.urandom(n) for n in (1, 9000, 300_000)]
    keys = []
    for blob in blobs:
        keys.append(writer.append(blob))
        writer.keep()
    assert [reader.get(k) for k in keys] == blobs
    first = PackKey.parse(keys[0])
    assert first.offset == HEADER.size and first.length == 1
    assert first.sha256 == hashlib.sha256(blobs[0]).hexdigest()
    assert len({PackKey.parse(k).segment for k in keys}) == 1
    writer.close()


def test_a_record_not_kept_is_overwritten_by_the_next(tmp_path: Path) -> None:
    writer, reader = PackWriter(tmp_path), PackReader(tmp_path)
    kept = writer.append(b"a" * 100)
    writer.keep()
    dropped = writer.append(b"b" * 100)  # e.g. a duplicate: its row was never committed
    again = writer.append(b"c" * 50)
    writer.keep()
    assert PackKey.parse(again).offset == PackKey.parse(dropped).offset
    assert reader.get(kept) == b"a" * 100 and reader.get(again) == b"c" * 50
    with pytest.raises(PackError, match="damaged"):
        reader.get(dropped)
    writer.close()


def test_damaged_bytes_and_bad_keys_are_refused(tmp_path: Path) -> None:
    writer, reader = PackWriter(tmp_path), PackReader(tmp_path)
    key = writer.append(b"payload" * 10)
    writer.keep()
    writer.close()
    k = PackKey.parse(key)
    with open(reader.path(k.segment), "r+b") as fh:
        fh.seek(k.offset + 3)
        fh.write(b"X")
    with pytest.raises(PackError, match="damaged"):
        reader.get(key)
    for bad in ("pack/zz/1/2/3", "pack/" + "a" * 16 + "/x/2/" + "0" * 64, "sha256/abc"):
        with pytest.raises(PackError, match="not a pack key"):
            PackKey.parse(bad)
    missing = str(PackKey("0" * 16, 48, 1, "0" * 64))
    with pytest.raises(FileNotFoundError, match="missing"):
        reader.get(missing)
    assert not reader.exists(missing)


def test_segments_roll_over_and_scan_lists_records(tmp_path: Path) -> None:
    writer = PackWriter(tmp_path, segment_bytes=1000, allocate_bytes=512)
    keys = []
    for i in range(5):
        keys.append(writer.append(bytes([i]) * 400))
        writer.keep()
    writer.append(b"never committed")  # trailing record, not kept
    writer.close()
    last = PackKey.parse(keys[-1])
    size = (tmp_path / f"{last.segment}.pack").stat().st_size
    assert size == last.offset + last.length  # allocation and the unkept record given back
    segments = {PackKey.parse(k).segment for k in keys}
    assert len(segments) == 3  # two 448-byte records fit in 1000 bytes
    reader = PackReader(tmp_path)
    scanned = [item for s in sorted(segments) for item in reader.scan(s)]
    assert {k for k, intact in scanned if intact} >= set(keys)
    assert all(intact for _, intact in scanned)


def test_object_store_serves_both_kinds_of_keys(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path, fsync=False)
    derived = store.put(b"thumbnail")
    writer = store.pack_writer()
    received = writer.append(b"DICM object")
    writer.keep()
    assert derived.startswith("sha256/") and received.startswith("pack/")
    assert store.get(derived) == b"thumbnail" and store.get(received) == b"DICM object"
    assert store.exists(received) and store.exists(derived)
    writer.close()


def test_a_partial_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pwritev may write less than asked (very large objects): the rest follows."""
    real_pwrite = os.pwrite

    def partial(fd: int, buffers: list[bytes], offset: int) -> int:
        return real_pwrite(fd, b"".join(buffers)[:HEADER.size + 10], offset)

    monkeypatch.setattr("sidecar_core.storage.packstore.os.pwritev", partial)
    writer = PackWriter(tmp_path)
    blob = os.urandom(100_000)
    key = writer.append(blob)
    writer.keep()
    writer.close()
    assert PackReader(tmp_path).get(key) == blob


@pytest.mark.parametrize("fsync", [True, False])
def test_large_objects_are_hashed_while_written_and_land_under_their_key(
        tmp_path: Path, fsync: bool) -> None:
    store = ObjectStore(tmp_path, fsync=fsync)
    big = os.urandom(OVERLAP_HASH_BYTES + 123)
    key = store.put(big)
    assert key == ObjectStore.key_for(big) and store.get(key) == big
    assert store.put(big) == key  # written once: the second put leaves nothing behind
    leftovers = [p for p in (tmp_path / "sha256").rglob("*") if p.is_file() and p.name != key[7:]]
    assert leftovers == []
    small = store.put(b"small")
    assert store.get(small) == b"small"


def test_a_failed_large_write_leaves_no_object(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStore(tmp_path, fsync=True)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sidecar_core.storage.objectstore.os.fdatasync", disk_full)
    big = os.urandom(OVERLAP_HASH_BYTES)
    with pytest.raises(OSError, match="No space"):
        store.put(big)
    assert not store.exists(ObjectStore.key_for(big))
    assert [p for p in (tmp_path / "sha256").rglob("*") if p.is_file()] == []


def test_a_new_segment_is_never_listed_unlocked(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction lists `*.pack` and takes a segment no writer has locked (an empty one it
    removes): a writer's new segment must be locked before it is ever listed."""
    import fcntl

    from sidecar_core.storage import compaction, packstore

    seen: list[dict[str, Path]] = []
    real_flock = fcntl.flock

    def flock(fd: int, op: int) -> None:
        seen.append(compaction._segments(tmp_path))  # what a compaction pass lists right now
        real_flock(fd, op)

    monkeypatch.setattr(packstore.fcntl, "flock", flock)
    writer = PackWriter(tmp_path)
    writer.append(b"x" * 10)
    assert seen == [{}]
    [(name, path)] = compaction._segments(tmp_path).items()
    with compaction._unheld(path) as free:
        assert not free  # the writer holds it
    assert not list(tmp_path.glob("*.new"))
    writer.close()


def test_compaction_sweeps_a_segment_a_killed_writer_was_making(tmp_path: Path) -> None:
    from sidecar_core.storage import compaction

    left = tmp_path / "0123456789abcdef.pack.new"
    left.write_bytes(b"")

    class NoRows:
        def execute(self, *_: object) -> NoRows:
            return self

        def fetchall(self) -> list[object]:
            return []

    compaction.compact(NoRows(), tmp_path, min_age_s=0)
    assert not left.exists()
