"""Compaction of pack segments: live records copied to a new segment, the index switched in one
transaction, the old segments removed — crash-safe at every step.

Retention and purge delete index rows; the bytes of those objects stay in their pack segment
until the segment is rewritten. A segment whose live fraction (bytes of records that an index
row names, over the file's size) is at or below a threshold (default 0.5: a segment half dead or
more) is compacted:

1. a journal (`packs/compaction.journal`: the new segment's name and the old ones) is synced;
2. every live record is read (and verified against its key) and written to the new segment;
3. the new segment and the folder are synced;
4. one transaction points every moved row at its new key (and drops the DICOMweb series
   indexes that embed the old keys; they are rebuilt on the next read);
5. after a grace period (readers that hold an old key finish), the old segments are removed,
   the folder synced and the journal removed.

A crash at any step leaves either the old index state (the new segment is unreferenced) or the
new one (the old segments are unreferenced); the next run reads the journal and removes
whichever of its segments no row names. A segment is never removed while a row names it.
Only segments no writer holds (packstore.PackWriter keeps a flock on its open segment) and older
than `min_age_s` are touched. Records of deleted rows are never copied, so nothing expired
comes back.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar_core.storage.packstore import (
    DEFAULT_SEGMENT_BYTES,
    HEADER,
    MAGIC,
    VERSION,
    PackKey,
    PackReader,
    sync_dir,
)

JOURNAL = "compaction.journal"
# Where a test (the fault suite) may have the process killed: after the journal, after the
# copy, after the sync, inside the switch's transaction before it commits, after the commit,
# after the old segments are removed (before the journal is).
STEPS = ("journal", "copied", "synced", "before_switch", "switched", "removed")

_LIVE = """
SELECT split_part(object_key, '/', 2) AS segment, count(*) AS objects,
       coalesce(sum(split_part(object_key, '/', 4)::bigint), 0) AS bytes
FROM instances WHERE object_key LIKE 'pack/%' GROUP BY 1
"""


@dataclass
class CompactionReport:
    segments_before: int = 0
    bytes_before: int = 0
    segments_after: int = 0
    bytes_after: int = 0
    rewritten: list[str] = field(default_factory=list)
    removed_empty: list[str] = field(default_factory=list)
    objects_moved: int = 0
    recovered: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def freed(self) -> int:
        return self.bytes_before - self.bytes_after

    def line(self) -> str:
        return (f"compaction: {len(self.rewritten)} segment(s) rewritten, "
                f"{len(self.removed_empty)} empty removed, {self.objects_moved} object(s) "
                f"moved; packs {self.bytes_before} -> {self.bytes_after} bytes "
                f"({self.freed} freed) in {self.seconds:.2f} s")


def crash_point(step: str, crash_at: str | None) -> None:
    """Kills this process (SIGKILL, no clean-up) at `step` when asked to: fault tests only."""
    if crash_at == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _segments(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.glob("*.pack"):
        stem = path.stem
        if len(stem) == 16 and all(c in "0123456789abcdef" for c in stem):
            found[stem] = path
    return found


def _referenced(conn: Any, segment: str) -> bool:
    row = conn.execute("SELECT 1 FROM instances WHERE object_key LIKE %s LIMIT 1",
                       (f"pack/{segment}/%",)).fetchone()
    return row is not None


def recover(conn: Any, root: Path) -> list[str]:
    """Finishes or undoes an interrupted compaction: of the journal's segments, removes those
    no row names. Returns the segments removed."""
    journal = root / JOURNAL
    if not journal.exists():
        return []
    try:
        entry = json.loads(journal.read_text())
        names = [entry["new"], *entry["old"]]
    except (ValueError, KeyError, TypeError):
        names = []  # a journal torn before its sync: nothing was written after it
    removed = []
    for name in names:
        path = root / f"{name}.pack"
        if path.exists() and not _referenced(conn, name):
            path.unlink()
            removed.append(name)
    sync_dir(root)
    journal.unlink()
    sync_dir(root)
    return removed


@contextmanager
def _unheld(path: Path) -> Iterator[bool]:
    """Whether no writer holds the segment (its flock), holding it ourselves meanwhile."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _write_journal(root: Path, new: str, old: list[str]) -> None:
    tmp = root / (JOURNAL + ".tmp")
    with tmp.open("w") as fh:
        json.dump({"new": new, "old": old}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / JOURNAL)
    sync_dir(root)


def compact(conn: Any, root: Path, *, threshold: float = 0.5, min_age_s: float = 60.0,
            grace_s: float = 5.0, dry_run: bool = False, crash_at: str | None = None,
            max_segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> CompactionReport:
    """Rewrites the pack segments under `root` whose live fraction is at most `threshold` and
    removes those with no live record. `conn`: a psycopg connection in autocommit mode (the
    caller holds the retention lock)."""
    started = time.monotonic()
    report = CompactionReport()
    root = Path(root)
    if not root.is_dir():
        return report
    if not dry_run:
        report.recovered = recover(conn, root)
    segments = _segments(root)
    report.segments_before = len(segments)
    report.bytes_before = sum(p.stat().st_size for p in segments.values())
    live = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(_LIVE).fetchall()}
    now = time.time()
    with ExitStack() as held:
        candidates: list[tuple[str, int]] = []
        for name, path in sorted(segments.items()):
            size = path.stat().st_size
            if now - path.stat().st_mtime < min_age_s:
                continue
            if not held.enter_context(_unheld(path)):
                continue  # a writer has it open
            objects, data = live.get(name, (0, 0))
            live_bytes = data + objects * HEADER.size
            if objects == 0:
                report.removed_empty.append(name)
                if not dry_run:
                    path.unlink()
            elif size and live_bytes / size <= threshold:
                candidates.append((name, live_bytes))
        for path in root.glob("*.pack.new"):  # a writer killed while it made a segment
            if not dry_run and now - path.stat().st_mtime >= min_age_s \
                    and held.enter_context(_unheld(path)):
                path.unlink()
        if report.removed_empty and not dry_run:
            sync_dir(root)
        group: list[str] = []
        total = 0
        for name, live_bytes in candidates:
            if group and total + live_bytes > max_segment_bytes:
                _rewrite(conn, root, group, report, grace_s, dry_run, crash_at)
                group, total = [], 0
            group.append(name)
            total += live_bytes
        if group:
            _rewrite(conn, root, group, report, grace_s, dry_run, crash_at)
    after = _segments(root)
    report.segments_after = len(after)
    report.bytes_after = sum(p.stat().st_size for p in after.values())
    if dry_run:
        report.bytes_after = report.bytes_before - sum(
            segments[n].stat().st_size for n in report.removed_empty + report.rewritten) + sum(
            live.get(n, (0, 0))[1] + live.get(n, (0, 0))[0] * HEADER.size
            for n in report.rewritten)
    report.seconds = time.monotonic() - started
    return report


def _rewrite(conn: Any, root: Path, old: list[str], report: CompactionReport, grace_s: float,
             dry_run: bool, crash_at: str | None) -> None:
    rows: list[tuple[str, str]] = []  # (instance id, key)
    for name in old:
        rows += [(str(r[0]), r[1]) for r in conn.execute(
            "SELECT id, object_key FROM instances WHERE object_key LIKE %s ORDER BY object_key",
            (f"pack/{name}/%",)).fetchall()]
    report.rewritten += old
    report.objects_moved += len(rows)
    if dry_run:
        return
    new = uuid.uuid4().hex[:16]
    _write_journal(root, new, old)
    crash_point("journal", crash_at)
    reader = PackReader(root)
    moved: dict[str, str] = {}
    fd = os.open(root / f"{new}.pack", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        offset = 0
        for _, key in rows:
            if key in moved:
                continue
            data = reader.get(key)  # verified against its key: a damaged record stops here
            k = PackKey.parse(key)
            os.pwrite(fd, HEADER.pack(MAGIC, VERSION, k.length, bytes.fromhex(k.sha256)) + data,
                      offset)
            moved[key] = str(PackKey(new, offset + HEADER.size, k.length, k.sha256))
            offset += HEADER.size + k.length
        crash_point("copied", crash_at)
        os.fsync(fd)
    finally:
        os.close(fd)
    sync_dir(root)
    crash_point("synced", crash_at)
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany("UPDATE instances SET object_key = %s WHERE object_key = %s",
                            [(new_key, old_key) for old_key, new_key in moved.items()])
        conn.execute("DELETE FROM dicomweb_series_index WHERE series_id IN (SELECT series_id "
                     "FROM instances WHERE object_key LIKE %s)", (f"pack/{new}/%",))
        crash_point("before_switch", crash_at)
    crash_point("switched", crash_at)
    if grace_s > 0:
        time.sleep(grace_s)  # a reader that read an old key before the switch finishes
    for name in old:
        if not _referenced(conn, name):  # always true after the switch; checked all the same
            (root / f"{name}.pack").unlink(missing_ok=True)
    sync_dir(root)
    crash_point("removed", crash_at)
    (root / JOURNAL).unlink()
    sync_dir(root)
