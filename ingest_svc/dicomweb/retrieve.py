"""WADO-RS over the index: the stored instances a caller may see, and each series' index."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from ingest_svc.dicomweb import series_index
from sidecar_core.db import Database
from sidecar_core.dicom.uids import uid_problem
from sidecar_core.errors import InvalidArgument, NotFound
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import DicomwebSeriesIndex, Facility, Instance, Series, Study

log = logging.getLogger(__name__)


@dataclass
class Stored:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size_bytes: int
    number_of_frames: int
    facility: str


@dataclass
class SeriesIndex:
    metadata_key: str
    frames_key: str
    instance_count: int
    facility: str


def check_uids(**uids: str) -> None:
    for name, uid in uids.items():
        if uid and uid_problem(uid):
            raise InvalidArgument("INVALID_UID", f"{name} {uid[:80]!r} {uid_problem(uid)}")


def _not_found(study: str, series: str = "", sop: str = "") -> NotFound:
    what = (f"instance {sop}" if sop else f"series {series}" if series else f"study {study}")
    return NotFound("NOT_FOUND", f"no {what} in study {study} is visible"
                    if series or sop else f"no study {study} is visible")


def _scoped(stmt: Any, facilities: Sequence[str] | None) -> Any:
    """Only studies of `facilities` (None: every facility, an explicit claim of the token)."""
    stmt = stmt.join(Facility, Facility.id == Study.facility_id)
    return stmt if facilities is None else stmt.where(Facility.name.in_(list(facilities)))


async def list_instances(db: Database, facilities: Sequence[str] | None, study: str,
                         series: str = "", sop: str = "", limit: int = 0,
                         offset: int = 0) -> list[Stored]:
    """The visible instances, in series then instance order; NotFound when there are none."""
    check_uids(study_instance_uid=study, series_instance_uid=series, sop_instance_uid=sop)
    if not study:
        raise InvalidArgument("MISSING_STUDY", "a study instance UID is required")
    frames = Instance.attributes["NumberOfFrames"].astext
    rows_attr = Instance.attributes["Rows"].astext
    stmt = _scoped(select(
        Study.study_instance_uid, Series.series_instance_uid, Instance.sop_instance_uid,
        Instance.sop_class_uid, Instance.transfer_syntax_uid, Instance.object_key,
        Instance.size_bytes, frames, rows_attr, Facility.name,
    ).join(Series, Series.study_id == Study.id).join(Instance, Instance.series_id == Series.id),
        facilities).where(Study.study_instance_uid == study)
    if series:
        stmt = stmt.where(Series.series_instance_uid == series)
    if sop:
        stmt = stmt.where(Instance.sop_instance_uid == sop)
    stmt = stmt.order_by(Study.created_at, Series.series_number, Series.created_at,
                         Instance.instance_number, Instance.created_at, Instance.id)
    if limit:
        stmt = stmt.offset(offset).limit(limit)
    async with db.read() as session:
        rows = (await session.execute(stmt)).all()
    if not rows and not offset:
        raise _not_found(study, series, sop)
    return [Stored(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _frames(r[7], r[8]), r[9])
            for r in rows]


def _frames(number_of_frames: str | None, rows: str | None) -> int:
    try:
        return max(1, int(float(number_of_frames))) if number_of_frames else (1 if rows else 0)
    except ValueError:
        return 1


class SeriesIndexes:
    """Gets or builds each series' index; one build per series at a time."""

    def __init__(self, db: Database, objects: ObjectStore) -> None:
        self.db = db
        self.objects = objects
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    async def get(self, facilities: Sequence[str] | None, study: str, series: str) -> SeriesIndex:
        check_uids(study_instance_uid=study, series_instance_uid=series)
        if not study or not series:
            raise InvalidArgument("MISSING_UID", "study and series instance UIDs are required")
        stmt = _scoped(select(Series.id, Series.instance_count, Facility.name).join(
            Study, Study.id == Series.study_id), facilities).where(
            Study.study_instance_uid == study, Series.series_instance_uid == series,
        ).order_by(Study.created_at).limit(1)
        async with self.db.read() as session:
            row = (await session.execute(stmt)).first()
        if row is None:
            raise _not_found(study, series)
        series_id, count, facility = row
        return await self._ensure(series_id, count, study, series, facility)

    async def _ensure(self, series_id: uuid.UUID, count: int, study: str, series: str,
                      facility: str) -> SeriesIndex:
        lock = self._locks.setdefault(series_id, asyncio.Lock())
        async with lock:
            known = await self._known(series_id, count)
            if known is not None:
                return SeriesIndex(known[0], known[1], count, facility)
            return await self._build(series_id, study, series, facility)

    async def prebuild(self, study_ids: list[uuid.UUID]) -> None:
        """Builds the index of every series of these (just completed) studies, so that a
        viewer's first metadata request finds it ready."""
        stmt = select(Series.id, Series.instance_count, Study.study_instance_uid,
                      Series.series_instance_uid, Facility.name).join(
            Study, Study.id == Series.study_id).join(
            Facility, Facility.id == Study.facility_id).where(Study.id.in_(study_ids))
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).all()
        for series_id, count, study, series, facility in rows:
            try:
                await self._ensure(series_id, count, study, series, facility)
            except Exception:  # the request path builds it again, and reports the error
                log.warning("series index of %s not prebuilt", series, exc_info=True)

    async def _known(self, series_id: uuid.UUID, count: int) -> tuple[str, str] | None:
        async with self.db.read() as session:
            row = (await session.execute(select(
                DicomwebSeriesIndex.metadata_key, DicomwebSeriesIndex.frames_key).where(
                DicomwebSeriesIndex.series_id == series_id,
                DicomwebSeriesIndex.instance_count == count))).first()
        return None if row is None else (row[0], row[1])

    async def _build(self, series_id: uuid.UUID, study: str, series: str,
                     facility: str) -> SeriesIndex:
        stmt = select(Instance.sop_instance_uid, Instance.transfer_syntax_uid,
                      Instance.object_key).where(Instance.series_id == series_id).order_by(
            Instance.instance_number, Instance.created_at, Instance.id)
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).all()
        refs = [series_index.InstanceRef(study, series, sop, ts, key) for sop, ts, key in rows]

        def build() -> tuple[str, str]:
            objects = [(ref, self.objects.get(ref.object_key)) for ref in refs]
            metadata, frames = series_index.build(objects)
            return self.objects.put(metadata), self.objects.put(frames)

        metadata_key, frames_key = await asyncio.to_thread(build)
        async with self.db.unit_of_work() as session:
            await session.execute(insert(DicomwebSeriesIndex).values(
                series_id=series_id, instance_count=len(refs), metadata_key=metadata_key,
                frames_key=frames_key).on_conflict_do_update(
                index_elements=[DicomwebSeriesIndex.series_id],
                set_={"instance_count": len(refs), "metadata_key": metadata_key,
                      "frames_key": frames_key}))
        return SeriesIndex(metadata_key, frames_key, len(refs), facility)
