"""Group commit of received objects: one fdatasync and one index statement for a group.

Objects that arrive while the previous group is being made durable (on other associations or
other receiving threads) wait and then share the next data sync of the pack segment and the
next index statement. There is no timer: the first caller to find no group in progress leads
one at once, for everything queued (itself included), so a lone object pays exactly what it paid
alone, and a stream of concurrent ones pays one sync and one round trip per group, not per
object. Every caller still returns only once its own object and index row are durable.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg

from sidecar_core.storage.packstore import PackWriter

T = TypeVar("T")
R = TypeVar("R")
MAX_GROUP = 64  # objects per group at most (one statement's parameters stay small)


@dataclass
class _Slot(Generic[T]):
    item: T
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class GroupStage(Generic[T, R]):
    """Leader/follower batching of one step: `submit` returns this caller's result, computed
    by whichever caller led the group it fell into."""

    max_group: int = MAX_GROUP
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _queue: list[_Slot[T]] = field(default_factory=list)
    _busy: bool = False
    groups: int = 0  # groups led so far (for tests and metrics)
    items: int = 0

    def submit(self, item: T, run: Callable[[list[T]], Sequence[R | BaseException]]) -> R:
        """`run` is called by the leader (maybe this caller) with the group's items and returns
        one result (or exception) per item, in order."""
        slot: _Slot[T] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._busy:
                    self._cond.wait()
                if slot.done:
                    break
                self._busy = True
                group = self._queue[:self.max_group]
                del self._queue[:self.max_group]
                self.groups += 1
                self.items += len(group)
            try:
                results: Sequence[R | BaseException] = run([s.item for s in group])
                if len(results) != len(group):
                    raise RuntimeError("a group step returned the wrong number of results")
            except BaseException as exc:  # every member learns of it
                results = [exc] * len(group)
            with self._cond:
                for member, outcome in zip(group, results, strict=True):
                    if isinstance(outcome, BaseException):
                        member.error = outcome
                    else:
                        member.result = outcome
                    member.done = True
                self._busy = False
                self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[no-any-return]


class SharedPackWriter:
    """One pack segment for every receiving thread: records are appended under a lock (kept at
    once: a record whose row is never committed stays as unreferenced bytes) and made durable
    by a shared fdatasync (`GroupStage`), outside the lock, so appends go on during a sync."""

    def __init__(self, writer: PackWriter) -> None:
        self._writer = writer
        self._lock = threading.Lock()
        self.syncs: GroupStage[None, None] = GroupStage()

    def append(self, data: bytes, digest: str | None = None) -> str:
        """Returns the record's key once the record is durable."""
        with self._lock:
            key = self._writer.append(data, digest, sync=False)
            self._writer.keep()
        self.syncs.submit(None, self._sync)
        return key

    def keep(self) -> None:
        """Nothing to do: `append` keeps every record."""

    def close(self) -> None:
        with self._lock:
            self._writer.close()

    def _sync(self, group: list[None]) -> list[None]:
        # every member wrote before it queued, so one sync of the segment covers them all; a
        # segment the writer left meanwhile was synced when it was closed
        with self._lock:
            fd = self._writer.sync_handle()
        if fd >= 0:
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        return [None] * len(group)


# sidecar_index_instance (migration 0005) once per object of the group, in one statement: one
# round trip and, on an autocommit connection, one transaction and one WAL flush.
_COLUMNS = (
    ("study_id", "uuid"), ("facility_id", "uuid"), ("accession", "text"), ("study_uid", "text"),
    ("study_modality", "text"), ("study_description", "text"), ("series_id", "uuid"),
    ("series_uid", "text"), ("series_modality", "text"), ("body_part", "text"),
    ("series_description", "text"), ("series_number", "int"), ("instance_id", "uuid"),
    ("sop_uid", "text"), ("sop_class_uid", "text"), ("transfer_syntax", "text"),
    ("instance_number", "int"), ("object_key", "text"), ("size", "bigint"),
    ("attributes", "jsonb"), ("source", "text"), ("now", "timestamptz"),
    ("allow_reopen", "boolean"), ("study_attributes", "jsonb"),
)
_INDEX_GROUP = (
    "SELECT p.n, r.study_id, r.status_before, r.outcome FROM unnest("
    + ", ".join(f"%({name})s::{kind}[]" for name, kind in _COLUMNS)
    + ") WITH ORDINALITY AS p(" + ", ".join(f"p_{name}" for name, _ in _COLUMNS)
    + ", n) CROSS JOIN LATERAL sidecar_index_instance("
    + ", ".join(f"p.p_{name}" for name, _ in _COLUMNS) + ") AS r ORDER BY p.n"
)

IndexRow = tuple[Any, str, str]  # study_id, status before, outcome


def index_group(conn: psycopg.Connection[Any], single: str,
                group: list[dict[str, Any]]) -> list[IndexRow | BaseException]:
    """Indexes a group's objects on `conn` (autocommit) in one statement; `single` is the
    one-object statement, used for a group of one and, when the group statement fails, for
    each object alone (so one bad object fails only itself). The objects are indexed in the
    order of their study, series and instance UIDs: two groups (two ingest replicas) lock
    study rows in the same order and cannot deadlock."""
    if len(group) == 1:
        return [_one(conn, single, group[0])]
    order = sorted(range(len(group)), key=lambda i: (
        str(group[i]["facility_id"]), group[i]["study_uid"], group[i]["series_uid"],
        group[i]["sop_uid"]))
    arrays = {name: [_array_value(group[i][name], kind) for i in order]
              for name, kind in _COLUMNS}
    try:
        rows = conn.execute(_INDEX_GROUP, arrays).fetchall()
    except psycopg.OperationalError:
        raise  # the connection is gone: every member fails and is sent again
    except psycopg.Error:
        return [_one(conn, single, params) for params in group]
    out: list[IndexRow | BaseException] = [RuntimeError("not indexed")] * len(group)
    for n, study_id, status, outcome in rows:
        out[order[n - 1]] = (study_id, status, outcome)
    return out


def _one(conn: psycopg.Connection[Any], single: str,
         params: dict[str, Any]) -> IndexRow | BaseException:
    try:
        row = conn.execute(single, params).fetchone()
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        return exc
    if row is None:
        return RuntimeError("the index function returned nothing")
    return (row[0], row[1], row[2])


def _array_value(value: Any, kind: str) -> Any:
    # jsonb travels as text (the caller's params hold it as JSON text already)
    return value if kind != "jsonb" or isinstance(value, str) else json.dumps(value)
