"""Receiving one instance: validate, store the object durably, index it, all or nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.parse import ParsedInstance, Rejected, parse_instance
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.objectstore import ObjectStore
from sidecar_core.subjects import Topology
from workflow_svc.store.models import Instance, Series, Study

log = logging.getLogger(__name__)
ACTOR = "ingest_svc"


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
        """Returns only once a STORED object and its index row are durable."""
        try:
            if facility is None:
                facility = await self.facilities.by_name(facility_name)
                if facility is None:
                    raise Rejected(
                        "UNKNOWN_FACILITY", f"facility {facility_name!r} is not registered"
                    )
            parsed = parse_instance(data, self.max_object_bytes)
        except Rejected as rej:
            await self._audit_rejection(facility_name, rej, source, source_ref)
            return ReceiveResult(
                Outcome.REJECTED,
                rej.reason,
                rej.message,
                rej.ids.get("study_instance_uid", ""),
                rej.ids.get("series_instance_uid", ""),
                rej.ids.get("sop_instance_uid", ""),
            )
        key = await asyncio.to_thread(self.objects.put, data)
        return await self._index(facility, parsed, key, len(data), source, source_ref)

    async def _index(
        self,
        facility: FacilityRef,
        p: ParsedInstance,
        key: str,
        size: int,
        source: str,
        source_ref: str,
    ) -> ReceiveResult:
        now = datetime.now(UTC)
        async with self.db.unit_of_work() as s:
            await s.execute(
                insert(Study)
                .values(
                    id=uuid.uuid4(),
                    facility_id=facility.id,
                    accession=p.accession,
                    study_instance_uid=p.study_instance_uid,
                    modality=p.modality[:64],
                    description=str(p.attributes.get("StudyDescription") or "")[:256],
                    ingest_status="receiving",
                    last_instance_at=now,
                )
                .on_conflict_do_nothing()
            )
            study_id, status = (
                await s.execute(
                    select(Study.id, Study.ingest_status)
                    .where(
                        Study.facility_id == facility.id,
                        Study.accession == p.accession,
                        Study.study_instance_uid == p.study_instance_uid,
                    )
                    .with_for_update()
                )
            ).one()
            await s.execute(
                insert(Series)
                .values(
                    id=uuid.uuid4(),
                    study_id=study_id,
                    series_instance_uid=p.series_instance_uid,
                    modality=p.modality[:16],
                    body_part=str(p.attributes.get("BodyPartExamined") or "")[:64],
                    description=str(p.attributes.get("SeriesDescription") or "")[:256],
                    series_number=_int(p.attributes.get("SeriesNumber")),
                )
                .on_conflict_do_nothing()
            )
            series_id = (
                await s.execute(
                    select(Series.id).where(
                        Series.study_id == study_id,
                        Series.series_instance_uid == p.series_instance_uid,
                    )
                )
            ).scalar_one()
            inserted = (
                await s.execute(
                    insert(Instance)
                    .values(
                        id=uuid.uuid4(),
                        series_id=series_id,
                        study_id=study_id,
                        sop_instance_uid=p.sop_instance_uid,
                        sop_class_uid=p.sop_class_uid,
                        transfer_syntax_uid=p.transfer_syntax_uid,
                        instance_number=_int(p.attributes.get("InstanceNumber")),
                        object_key=key,
                        size_bytes=size,
                        attributes=p.attributes,
                        source=source,
                    )
                    .on_conflict_do_nothing()
                    .returning(Instance.id)
                )
            ).scalar_one_or_none()
            ref = StudyRef(facility.name, p.accession, p.study_instance_uid, study_id)
            ids = dict(
                study_instance_uid=p.study_instance_uid,
                series_instance_uid=p.series_instance_uid,
                sop_instance_uid=p.sop_instance_uid,
                accession=p.accession,
            )
            if inserted is None:
                await audit.record(
                    s,
                    self.topology,
                    "study.duplicate_seen",
                    ACTOR,
                    ref,
                    context={
                        "level": "instance",
                        "source": source,
                        "sop_instance_uid": p.sop_instance_uid,
                    },
                )
                return ReceiveResult(Outcome.DUPLICATE, study_id=study_id, **ids)
            await s.execute(
                update(Series)
                .where(Series.id == series_id)
                .values(instance_count=Series.instance_count + 1)
            )
            await s.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(
                    instance_count=Study.instance_count + 1,
                    last_instance_at=now,
                    ingest_status="receiving",
                )
            )
            if status == "complete":
                await audit.record(
                    s,
                    self.topology,
                    "study.reopened",
                    ACTOR,
                    ref,
                    context={
                        "source": source,
                        "sop_instance_uid": p.sop_instance_uid,
                        "reason": "instance arrived after completion",
                    },
                )
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


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
