"""Receiving one instance: validate, store the object durably, index it, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import psycopg

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.study.arrival_notice import ArrivalNotices
from ingest_svc.study.group_commit import GroupStage, IndexRow, SharedPackWriter, index_group
from ingest_svc.study.refused import RefusedStudies
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.audit_spool import AuditSpool, record_or_spool
from sidecar_core.db import Database
from sidecar_core.dicom.parse import ParsedInstance, Rejected, parse_instance
from sidecar_core.errors import Unavailable
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from sidecar_core.observability.metrics import StageClock
from sidecar_core.storage.objectstore import ObjectStore, RecordWriter
from sidecar_core.storage.packstore import PackWriter

log = logging.getLogger(__name__)
ACTOR = "ingest_svc"
# A thread's connection idle longer than this is checked before use (a restarted server
# leaves every idle connection dead; without the check each would fail one object).
IDLE_PING_S = 5.0
# One round trip: migration 0005's function (psycopg named placeholders).
_INDEX_RAW = (
    "SELECT * FROM sidecar_index_instance(%(study_id)s, %(facility_id)s, %(accession)s, "
    "%(study_uid)s, %(study_modality)s, %(study_description)s, %(series_id)s, %(series_uid)s, "
    "%(series_modality)s, %(body_part)s, %(series_description)s, %(series_number)s, "
    "%(instance_id)s, %(sop_uid)s, %(sop_class_uid)s, %(transfer_syntax)s, "
    "%(instance_number)s, %(object_key)s, %(size)s, %(attributes)s::jsonb, %(source)s, %(now)s, "
    "%(allow_reopen)s, %(study_attributes)s::jsonb)"
)


_KNOWN_INSTANCE = (
    "SELECT s.id FROM studies s JOIN series se ON se.study_id = s.id "
    "JOIN instances i ON i.series_id = se.id "
    "WHERE s.facility_id = %(facility_id)s AND s.accession = %(accession)s "
    "AND s.study_instance_uid = %(study_uid)s AND se.series_instance_uid = %(series_uid)s "
    "AND i.sop_instance_uid = %(sop_uid)s"
)


class StorageFailed(Unavailable):
    """The object could not be made durable (disk full or failing, database unreachable).
    Nothing of it was indexed; the sender should send it again later."""

    def __init__(self, short: str, detail: str) -> None:
        super().__init__("STORAGE_FAILED", f"not stored ({short}: {detail}); nothing was kept, "
                         "send it again later")
        self.short = short  # what failed, in a few words (a DIMSE ErrorComment holds 64)


def storage_failure(exc: BaseException) -> StorageFailed:
    if isinstance(exc, OSError):
        short = f"object store: {exc.strerror or type(exc).__name__}"
    elif isinstance(exc, psycopg.Error):
        short = f"index unavailable: {type(exc).__name__}"
    else:
        short = type(exc).__name__
    # one line: libpq's messages run over several ("server closed the connection
    # unexpectedly\n\tThis probably means..."), and a one-line report would lose the advice
    return StorageFailed(short, " ".join(str(exc).split()))


class Outcome(Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass
class ReceiveResult:
    outcome: Outcome
    reason: str = ""
    message: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    accession: str = ""
    study_id: uuid.UUID | None = None


class Receiver:
    """The ingest domain: every adapter (gRPC, DIMSE, STOW-RS) hands objects to `receive`."""

    def __init__(
        self,
        db: Database,
        objects: ObjectStore,
        topology: Topology,
        facilities: FacilityDirectory,
        max_object_bytes: int,
        threads: int = 8,
        statement_timeout_s: float = 120.0,
        spool: AuditSpool | None = None,
        refused: RefusedStudies | None = None,
    ) -> None:
        self.db = db
        self.refused = refused  # studies an instance of which our storage failure refused
        self.objects = objects
        self.topology = topology
        self.facilities = facilities
        self.max_object_bytes = max_object_bytes
        self.statement_timeout_ms = max(1, int(statement_timeout_s * 1000))
        self.spool = spool  # audit events the database cannot take (an outage) wait here
        # One worker thread (and one plain connection) per concurrently stored object.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="receive")
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._writers: list[RecordWriter] = []
        self._all_lock = threading.Lock()
        # Group commit (group_commit.py): the objects stored at the same time on several
        # threads share one data sync of one pack segment and one index statement.
        self._shared: SharedPackWriter | None = None
        self.index_groups: GroupStage[dict[str, Any], IndexRow] = GroupStage()
        # Each stored instance is noticed to the preprocess process (early decode), at most once.
        self.notices: ArrivalNotices | None = None

    async def receive(
        self,
        facility_name: str,
        data: bytes,
        source: str,
        source_ref: str = "",
        facility: FacilityRef | None = None,
    ) -> ReceiveResult:
        """Returns only once a STORED object and its index row are durable.

        The common case (a new instance of a study still receiving) runs in one worker thread:
        parse, append the object to the shared pack segment (synced), then index it with one
        autocommitted call on a plain connection (objects stored at the same time share the
        sync and the call: group_commit.py); so a row never names missing bytes
        and a rejected object leaves nothing behind. A duplicate or an instance that reopens a
        completed study is committed together with its audit event, on the same thread.
        """
        if facility is None:
            facility = await self.facilities.by_name(facility_name)
            if facility is None:
                rej = Rejected("UNKNOWN_FACILITY", f"facility {facility_name!r} is not registered")
                metrics.INGEST_REJECTIONS.labels("", source, rej.reason).inc()
                await self._audit_rejection(facility_name, rej, source, source_ref)
                return _rejected(rej)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self.receive_blocking, facility, data,
                                          source, source_ref, loop)

    def receive_blocking(self, facility: FacilityRef, data: bytes, source: str,
                         source_ref: str, loop: asyncio.AbstractEventLoop,
                         timeout_s: float = 120.0,
                         clock: StageClock | None = None) -> ReceiveResult:
        """`receive` for a caller on its own thread (the DIMSE SCP's association threads): the
        object is stored right here, with no hand-off; the audit events of a rejection or a
        storage failure run on `loop` (the service's event loop; they may need the spool),
        waited for up to `timeout_s`. `clock`, if any, gets the laps parse, append and index
        (metrics.INGEST_STAGE_SECONDS)."""
        try:
            result = self._receive_sync(facility, data, source, clock)
            metrics.INGEST_INSTANCES.labels(facility.name, source, result.outcome.value).inc()
            return result
        except Rejected as rej:
            metrics.INGEST_REJECTIONS.labels(facility.name, source, rej.reason).inc()
            asyncio.run_coroutine_threadsafe(
                self._audit_rejection(facility.name, rej, source, source_ref), loop
            ).result(timeout_s)
            return _rejected(rej)
        except (OSError, psycopg.Error) as exc:
            failure = storage_failure(exc)
            study_uid = getattr(self._local, "study_uid", "")
            if study_uid and self.refused is not None:  # the sender will send it again
                self.refused.refused(facility.id, study_uid)
            metrics.INGEST_REJECTIONS.labels(facility.name, source, "STORAGE_FAILED").inc()
            asyncio.run_coroutine_threadsafe(
                self._audit_rejection(facility.name, failure, source, source_ref), loop
            ).result(timeout_s)
            raise failure from exc

    def _receive_sync(self, facility: FacilityRef, data: bytes, source: str,
                      clock: StageClock | None = None) -> ReceiveResult:
        """On the caller's thread: parse, append the object to the pack segment (synced with
        whatever else is being stored), then index it with one autocommitted call (grouped
        likewise); a duplicate or a reopening
        instance is then committed with its audit event in one more transaction."""
        self._local.study_uid = ""
        p = parse_instance(data, self.max_object_bytes)
        if clock is not None:
            clock.lap("parse")
        self._local.study_uid = p.study_instance_uid
        writer = self._writer()
        params = _index_params(facility, p, "", len(data), source)
        conn = self._connection()
        if getattr(self._local, "resending", False):  # the last one was a duplicate: a PACS
            try:  # re-sending a study sends many; a lookup is cheaper than storing the bytes
                known = conn.execute(_KNOWN_INSTANCE, params).fetchone()
                if known is not None:
                    return self._audit_duplicate(conn, facility, p, known[0], source)
            except BaseException:
                self._drop_connection()
                raise
        params["object_key"] = writer.append(data)  # durable before the row naming it commits
        if clock is not None:
            clock.lap("append")
        outcome = ""
        try:
            study_id, _, outcome = self.index_groups.submit(
                params, lambda group: index_group(conn, _INDEX_RAW, group))
            if clock is not None:
                clock.lap("index")
            self._local.resending = outcome == "duplicate"
            if outcome == "inserted":
                writer.keep()
                self._notice(p, params["object_key"])
                return ReceiveResult(Outcome.STORED, study_id=study_id, **_ids(p))
            if outcome == "duplicate":  # its bytes stay unreferenced in the segment
                return self._audit_duplicate(conn, facility, p, study_id, source)
            writer.keep()  # "reopen": committed below, with its audit event
            result = self._reopen(conn, facility, p, params, source)
            if result.outcome is Outcome.STORED:  # a series growing after completion
                self._notice(p, params["object_key"])
            return result
        except BaseException:
            if outcome == "":  # the commit's fate is unknown: never overwrite what it may name
                writer.keep()
            self._drop_connection()
            raise

    def _notice(self, p: ParsedInstance, object_key: str) -> None:
        if self.notices is not None:
            self.notices.stored(p, object_key)

    def _audit_duplicate(self, conn: psycopg.Connection[Any], facility: FacilityRef,
                         p: ParsedInstance, study_id: uuid.UUID, source: str) -> ReceiveResult:
        with conn.transaction():
            return self._record_duplicate(conn, StudyRef(
                facility.name, p.accession, p.study_instance_uid, study_id), p, source)

    def _record_duplicate(self, conn: psycopg.Connection[Any], ref: StudyRef,
                          p: ParsedInstance, source: str) -> ReceiveResult:
        audit.record_sync(conn, self.topology, "study.duplicate_seen", ACTOR, ref,
                          context={"level": "instance", "source": source,
                                   "sop_instance_uid": p.sop_instance_uid})
        return ReceiveResult(Outcome.DUPLICATE, study_id=ref.study_id, **_ids(p))

    def _reopen(self, conn: psycopg.Connection[Any], facility: FacilityRef, p: ParsedInstance,
                params: dict[str, Any], source: str) -> ReceiveResult:
        """An instance of a completed study: indexed with its `study.reopened` event, atomically
        (a concurrent sender may have stored it meanwhile: then it is a duplicate)."""
        with conn.transaction():
            study_id, status, outcome = conn.execute(  # type: ignore[misc]
                _INDEX_RAW, {**params, "allow_reopen": True}).fetchone()
            ref = StudyRef(facility.name, p.accession, p.study_instance_uid, study_id)
            if outcome == "duplicate":
                return self._record_duplicate(conn, ref, p, source)
            if status == "complete":
                audit.record_sync(conn, self.topology, "study.reopened", ACTOR, ref,
                                  context={"source": source,
                                           "sop_instance_uid": p.sop_instance_uid,
                                           "reason": "instance arrived after completion"})
        return ReceiveResult(Outcome.STORED, study_id=study_id, **_ids(p))

    async def warm_up(self, threads: int = 2) -> None:
        """Opens the first workers' connections and exercises the header parser once."""
        loop = asyncio.get_running_loop()
        gate = threading.Barrier(threads)

        def warm() -> None:
            self.warm_current_thread()
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait(timeout=5)  # keeps each call on its own thread

        await asyncio.gather(*(loop.run_in_executor(self._threads, warm)
                               for _ in range(threads)))

    def warm_current_thread(self) -> None:
        """Opens this thread's connection and exercises the header parser once."""
        self._connection().execute("SELECT 1").fetchone()
        with contextlib.suppress(Rejected):
            parse_instance(_WARM_UP_OBJECT, self.max_object_bytes)

    def _writer(self) -> RecordWriter:
        """The shared, group-synced pack writer for a local store; a writer of this thread's
        own otherwise (an S3 store: a PUT per object is durable when it returns)."""
        writer = getattr(self._local, "writer", None)
        if writer is None:
            with self._all_lock:
                if self._shared is not None:
                    writer = self._shared
                else:
                    writer = self.objects.pack_writer()
                    if isinstance(writer, PackWriter):
                        writer = self._shared = SharedPackWriter(writer)
                    self._writers.append(writer)
            self._local.writer = writer
        return writer

    def _connection(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is not None and not conn.closed and now - self._local.used > IDLE_PING_S:
            try:  # idle a while: the server may have restarted since (one round trip)
                conn.execute("SELECT 1")
            except psycopg.Error:
                self._drop_connection()
                conn = None
        self._local.used = now
        if conn is None or conn.closed:
            conn = psycopg.connect(self.db.libpq_url, autocommit=True)
            # bounds a hot-path call that waits (e.g. on a study row lock) for the caller
            conn.execute(f"SET statement_timeout = {self.statement_timeout_ms}")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Closes the worker threads' connections."""
        self._threads.shutdown(wait=True)
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
            for writer in self._writers:
                writer.close()
            self._writers.clear()

    async def _audit_rejection(
        self, facility: str, rej: Rejected | StorageFailed, source: str, source_ref: str
    ) -> None:
        ids = rej.ids if isinstance(rej, Rejected) else {}
        await record_or_spool(
            self.db, self.topology, self.spool, "study.receive_failed", ACTOR,
            StudyRef(facility[:64], "", ids.get("study_instance_uid", "")),
            error_class=rej.reason, error_message=rej.message,
            context={"reason": rej.reason, "source": source, "source_ref": source_ref[:256],
                     **ids})



def _warm_up_object() -> bytes:
    """A tiny valid CT instance (synthetic UIDs) to exercise the parser at start-up."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.4"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.1", "1.2.3.2"
    ds.Modality, ds.ImagePositionPatient, ds.PixelSpacing = "CT", [0, 0, 0], [1, 1]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_WARM_UP_OBJECT = _warm_up_object()


def _index_params(facility: FacilityRef, p: ParsedInstance, key: str, size: int,
                  source: str) -> dict[str, Any]:
    a = p.attributes
    return {
        "study_id": uuid.uuid4(), "facility_id": facility.id, "accession": p.accession,
        "study_uid": p.study_instance_uid, "study_modality": p.modality[:64],
        "study_description": str(a.get("StudyDescription") or "")[:256],
        "series_id": uuid.uuid4(), "series_uid": p.series_instance_uid,
        "series_modality": p.modality[:16],
        "body_part": str(a.get("BodyPartExamined") or "")[:64],
        "series_description": str(a.get("SeriesDescription") or "")[:256],
        "series_number": _int(a.get("SeriesNumber")), "instance_id": uuid.uuid4(),
        "sop_uid": p.sop_instance_uid, "sop_class_uid": p.sop_class_uid,
        "transfer_syntax": p.transfer_syntax_uid,
        "instance_number": _int(a.get("InstanceNumber")), "object_key": key, "size": size,
        "attributes": json.dumps(a), "source": source, "now": datetime.now(UTC),
        "allow_reopen": False, "study_attributes": json.dumps(p.study_attributes),
    }


def _rejected(rej: Rejected) -> ReceiveResult:
    return ReceiveResult(Outcome.REJECTED, rej.reason, rej.message,
                         rej.ids.get("study_instance_uid", ""),
                         rej.ids.get("series_instance_uid", ""),
                         rej.ids.get("sop_instance_uid", ""))


def _ids(p: ParsedInstance) -> dict[str, str]:
    return {"study_instance_uid": p.study_instance_uid,
            "series_instance_uid": p.series_instance_uid,
            "sop_instance_uid": p.sop_instance_uid, "accession": p.accession}


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
