"""Receiving one instance: validate, store the object durably, index it, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import psycopg

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.parse import ParsedInstance, Rejected, parse_instance
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.audit_spool import AuditSpool, record_or_spool
from sidecar_core.db import Database
from sidecar_core.errors import Unavailable
from sidecar_core.objectstore import ObjectStore
from sidecar_core.packstore import PackWriter
from sidecar_core.subjects import Topology

log = logging.getLogger(__name__)
ACTOR = "ingest_svc"
# One round trip: migration 0004's function (psycopg named placeholders).
_INDEX_RAW = (
    "SELECT * FROM sidecar_index_instance(%(study_id)s, %(facility_id)s, %(accession)s, "
    "%(study_uid)s, %(study_modality)s, %(study_description)s, %(series_id)s, %(series_uid)s, "
    "%(series_modality)s, %(body_part)s, %(series_description)s, %(series_number)s, "
    "%(instance_id)s, %(sop_uid)s, %(sop_class_uid)s, %(transfer_syntax)s, "
    "%(instance_number)s, %(object_key)s, %(size)s, %(attributes)s::jsonb, %(source)s, %(now)s, "
    "%(allow_reopen)s)"
)


class StorageFailed(Unavailable):
    """The object could not be made durable (disk full or failing, database unreachable).
    Nothing of it was indexed; the sender should send it again later."""

    short = ""  # what failed, in a few words (DIMSE ErrorComment holds 64 characters)


def storage_failure(exc: BaseException) -> StorageFailed:
    if isinstance(exc, OSError):
        short = f"object store: {exc.strerror or type(exc).__name__}"
    elif isinstance(exc, psycopg.Error):
        short = f"index unavailable: {type(exc).__name__}"
    else:
        short = type(exc).__name__
    failure = StorageFailed("STORAGE_FAILED", f"not stored ({short}: {exc}); nothing was "
                            "kept, send it again later")
    failure.short = short
    return failure


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
    ) -> None:
        self.db = db
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
        self._writers: list[PackWriter] = []
        self._all_lock = threading.Lock()

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
        parse, append the object to the thread's pack segment (one data sync), then index it
        with one autocommitted call on a plain connection; so a row never names missing bytes
        and a rejected object leaves nothing behind. Duplicates and instances that reopen a
        completed study take the slower path that also writes their audit event atomically.
        """
        try:
            if facility is None:
                facility = await self.facilities.by_name(facility_name)
                if facility is None:
                    raise Rejected(
                        "UNKNOWN_FACILITY", f"facility {facility_name!r} is not registered"
                    )
            loop = asyncio.get_running_loop()
            fast = await loop.run_in_executor(self._threads, self._receive_sync, facility, data,
                                              source)
        except Rejected as rej:
            await self._audit_rejection(facility_name, rej, source, source_ref)
            return _rejected(rej)
        except (OSError, psycopg.Error) as exc:
            failure = storage_failure(exc)
            await self._audit_rejection(facility_name, failure, source, source_ref)
            raise failure from exc
        if isinstance(fast, ReceiveResult):
            return fast
        return await self._index_with_audit(facility, *fast, source)

    def receive_blocking(self, facility: FacilityRef, data: bytes, source: str,
                         source_ref: str, loop: asyncio.AbstractEventLoop,
                         timeout_s: float = 120.0) -> ReceiveResult:
        """`receive` for a caller on its own thread (the DIMSE SCP's association threads): the
        hot path runs right here, with no hand-off; audit events and the duplicate / reopen
        path run on `loop` (the service's event loop), waited for up to `timeout_s`."""
        try:
            fast = self._receive_sync(facility, data, source)
        except Rejected as rej:
            asyncio.run_coroutine_threadsafe(
                self._audit_rejection(facility.name, rej, source, source_ref), loop
            ).result(timeout_s)
            return _rejected(rej)
        except (OSError, psycopg.Error) as exc:
            failure = storage_failure(exc)
            asyncio.run_coroutine_threadsafe(
                self._audit_rejection(facility.name, failure, source, source_ref), loop
            ).result(timeout_s)
            raise failure from exc
        if isinstance(fast, ReceiveResult):
            return fast
        return asyncio.run_coroutine_threadsafe(
            self._index_with_audit(facility, *fast, source), loop).result(timeout_s)

    def _receive_sync(self, facility: FacilityRef, data: bytes, source: str
                      ) -> ReceiveResult | tuple[ParsedInstance, dict[str, Any], bool]:
        """The hot path, in a worker thread: parse, append the object to this thread's pack
        segment (synced), then index it with one autocommitted call. Returns the parsed
        instance, the index parameters and whether the object's bytes were kept when the slow
        path must take over (nothing was indexed then)."""
        p = parse_instance(data, self.max_object_bytes)
        writer = self._writer()
        key = writer.append(data)  # durable before the row that names it commits
        params = _index_params(facility, p, key, len(data), source)
        conn = self._connection()
        try:
            study_id, _, outcome = conn.execute(_INDEX_RAW, params).fetchone()  # type: ignore[misc]
        except BaseException:
            writer.keep()  # the commit's fate is unknown: never overwrite what it may name
            self._drop_connection()
            raise
        if outcome == "duplicate":
            return p, params, False  # the next append reuses the space
        writer.keep()
        if outcome == "inserted":
            return ReceiveResult(Outcome.STORED, study_id=study_id, **_ids(p))
        return p, params, True  # "reopen": the slow path commits it with its audit event

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

    def _writer(self) -> PackWriter:
        writer = getattr(self._local, "writer", None)
        if writer is None:
            writer = self._local.writer = self.objects.pack_writer()
            with self._all_lock:
                self._writers.append(writer)
        return writer

    def _connection(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
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

    async def _index_with_audit(self, facility: FacilityRef, p: ParsedInstance,
                                params: dict[str, Any], kept: bool, source: str
                                ) -> ReceiveResult:
        """A duplicate or a reopened study: index again with its audit event, atomically.

        `kept`: the object's bytes were kept in the pack; without them the row must not be
        inserted (it would name bytes the next object overwrites)."""
        async with self.db.engine.begin() as s:
            study_id, status, outcome = (await s.exec_driver_sql(
                _INDEX_RAW, {**params, "allow_reopen": True})).one()  # type: ignore[misc]
            ref = StudyRef(facility.name, p.accession, p.study_instance_uid, study_id)
            if outcome == "inserted" and not kept:
                raise RuntimeError(f"instance {p.sop_instance_uid} was a duplicate a moment "
                                   "ago and is not indexed now; send it again")
            if outcome == "duplicate":
                await audit.record(s, self.topology, "study.duplicate_seen", ACTOR, ref,
                                   context={"level": "instance", "source": source,
                                            "sop_instance_uid": p.sop_instance_uid})
                return ReceiveResult(Outcome.DUPLICATE, study_id=study_id, **_ids(p))
            if status == "complete":
                await audit.record(s, self.topology, "study.reopened", ACTOR, ref,
                                   context={"source": source,
                                            "sop_instance_uid": p.sop_instance_uid,
                                            "reason": "instance arrived after completion"})
        return ReceiveResult(Outcome.STORED, study_id=study_id, **_ids(p))

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
        "allow_reopen": False,
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
