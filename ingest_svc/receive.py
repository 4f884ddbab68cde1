"""Receiving one instance: validate, store the object durably, index it, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import text

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.parse import ParsedInstance, Rejected, parse_instance
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.objectstore import ObjectStore
from sidecar_core.subjects import Topology

log = logging.getLogger(__name__)
ACTOR = "ingest_svc"
INLINE_IO_BYTES = 64 * 1024
T = TypeVar("T")
# One round trip: migration 0003's function (psycopg named placeholders).
_INDEX_RAW = (
    "SELECT * FROM sidecar_index_instance(%(study_id)s, %(facility_id)s, %(accession)s, "
    "%(study_uid)s, %(study_modality)s, %(study_description)s, %(series_id)s, %(series_uid)s, "
    "%(series_modality)s, %(body_part)s, %(series_description)s, %(series_number)s, "
    "%(instance_id)s, %(sop_uid)s, %(sop_class_uid)s, %(transfer_syntax)s, "
    "%(instance_number)s, %(object_key)s, %(size)s, %(attributes)s::jsonb, %(source)s, %(now)s)"
)


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
    ) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology
        self.facilities = facilities
        self.max_object_bytes = max_object_bytes

    async def receive(
        self,
        facility_name: str,
        data: bytes,
        source: str,
        source_ref: str = "",
        facility: FacilityRef | None = None,
    ) -> ReceiveResult:
        """Returns only once a STORED object and its index row are durable.

        The object is hashed in a thread while the header is parsed, then written (synced,
        renamed, directory synced) while the index statement runs; the row commits only after
        the object is durable, so a row never points at a missing object, and a rejected object
        leaves nothing behind.
        """
        inline = len(data) <= INLINE_IO_BYTES
        keying = (_soon(ObjectStore.key_for, data, inline=inline)
                  if 0 < len(data) <= self.max_object_bytes else None)
        try:
            if facility is None:
                facility = await self.facilities.by_name(facility_name)
                if facility is None:
                    raise Rejected(
                        "UNKNOWN_FACILITY", f"facility {facility_name!r} is not registered"
                    )
            parsed = parse_instance(data, self.max_object_bytes)
        except Rejected as rej:
            if keying is not None:
                with contextlib.suppress(Exception):
                    await keying
            await self._audit_rejection(facility_name, rej, source, source_ref)
            return ReceiveResult(
                Outcome.REJECTED,
                rej.reason,
                rej.message,
                rej.ids.get("study_instance_uid", ""),
                rej.ids.get("series_instance_uid", ""),
                rej.ids.get("sop_instance_uid", ""),
            )
        assert keying is not None  # parse_instance rejects empty and oversized objects
        key = await keying
        writing = _soon(self.objects.put, data, key, inline=inline)
        return await self._index(facility, parsed, key, writing, len(data), source)

    async def _index(
        self,
        facility: FacilityRef,
        p: ParsedInstance,
        key: str,
        visible: asyncio.Future[str],
        size: int,
        source: str,
    ) -> ReceiveResult:
        """One round trip (sidecar_index_instance, migration 0003) plus the commit.

        `visible` is the object write running beside the index statement; the transaction
        commits only after it, so an acknowledged row always has its object.
        """
        a = p.attributes
        params = {
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
        }
        ids = dict(study_instance_uid=p.study_instance_uid,
                   series_instance_uid=p.series_instance_uid,
                   sop_instance_uid=p.sop_instance_uid, accession=p.accession)
        try:
            # Fast path: a new instance of a study still receiving, on a plain connection.
            async with self.db.raw() as conn:
                cur = await conn.execute(_INDEX_RAW, params)
                study_id, status, inserted = await cur.fetchone()  # type: ignore[misc]
                if inserted and status != "complete":
                    await visible  # the object is durable before the row commits
                    await conn.commit()
                    return ReceiveResult(Outcome.STORED, study_id=study_id, **ids)
                await conn.rollback()
        finally:
            await visible  # raises if the object could not be made durable
        # A duplicate or a reopened study: index again with its audit event, atomically.
        async with self.db.engine.begin() as s:
            study_id, status, inserted = (await s.exec_driver_sql(_INDEX_RAW, params)).one()  # type: ignore[misc]
            ref = StudyRef(facility.name, p.accession, p.study_instance_uid, study_id)
            if not inserted:
                await audit.record(s, self.topology, "study.duplicate_seen", ACTOR, ref,
                                   context={"level": "instance", "source": source,
                                            "sop_instance_uid": p.sop_instance_uid})
                return ReceiveResult(Outcome.DUPLICATE, study_id=study_id, **ids)
            if status == "complete":
                await audit.record(s, self.topology, "study.reopened", ACTOR, ref,
                                   context={"source": source,
                                            "sop_instance_uid": p.sop_instance_uid,
                                            "reason": "instance arrived after completion"})
        return ReceiveResult(Outcome.STORED, study_id=study_id, **ids)

    async def _audit_rejection(
        self, facility: str, rej: Rejected, source: str, source_ref: str
    ) -> None:
        try:
            async with self.db.unit_of_work() as s:
                await audit.record(
                    s,
                    self.topology,
                    "study.receive_failed",
                    ACTOR,
                    StudyRef(facility[:64], "", rej.ids.get("study_instance_uid", "")),
                    error_class=rej.reason,
                    error_message=rej.message,
                    context={
                        "reason": rej.reason,
                        "source": source,
                        "source_ref": source_ref[:256],
                        **rej.ids,
                    },
                )
        except Exception:  # the rejection itself must still be answered
            log.exception("could not audit a rejection")

    async def ping(self) -> None:
        async with self.db.read() as s:
            await s.execute(text("select 1"))


def _soon(fn: Callable[..., T], *args: Any, inline: bool) -> asyncio.Future[T]:
    """Runs blocking file I/O in a thread, or at once for small objects, where the thread hop
    costs more than the write (the event loop is blocked well under a millisecond)."""
    if not inline:
        return asyncio.ensure_future(asyncio.to_thread(fn, *args))
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
