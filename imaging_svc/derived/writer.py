"""Writes an AI run's DICOM results (SR, SEG) once its findings are stored and again, as a new
version, when review decisions change; stores them and indexes them as derived series of the
study.

Consumes `ai_run.v1.findings_stored` (the workflow emits it in the transaction that stores a
completed run's findings, so they are there when it arrives) and `review.v1.changed`. Both read
the findings from the store and take one path; a version is written only when its content
changed. A failed or invalid run has no findings and no event: nothing is written for it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from imaging_svc.derived import load
from imaging_svc.derived.content import (
    DerivedFinding,
    fingerprint,
    included,
    uid_of,
)
from imaging_svc.derived.seg import SEG_SERIES_NUMBER, build_seg
from imaging_svc.derived.sr import SR_SERIES_NUMBER, build_sr
from protos.sidecar.events.v1 import events_pb2, review_events_pb2
from sidecar_core import audit
from sidecar_core.ai_run_status import AiRunStatus
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.dicom.parse import parse_instance
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import (
    AI_RUN_FINDINGS_STORED,
    REVIEW_CHANGED,
    Topology,
)
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import AiRun, DerivedObject, Facility, Instance, Series, Study

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.derived"
_MAX_BYTES = 1 << 31


@dataclass
class Written:
    kind: str
    version: int
    sop_instance_uid: str
    series_instance_uid: str


class DerivedResultsWriter:
    def __init__(self, db: Database, objects: ObjectStore, topology: Topology) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology

    async def handle(self, delivery: Delivery) -> None:
        name = delivery.subject.removeprefix(self.topology.prefix + ".")
        try:
            if name == AI_RUN_FINDINGS_STORED:
                stored = events_pb2.AiRunFindingsStored.FromString(delivery.data)
                run_id = uuid.UUID(stored.ai_run_id)
            elif name == REVIEW_CHANGED:
                change = review_events_pb2.ReviewChanged.FromString(delivery.data)
                study_id = uuid.UUID(change.study_id)
                run_ids = [str(uuid.UUID(r)) for r in change.ai_run_ids]
            else:
                return
        except ValueError as exc:  # an undecodable payload or a malformed id
            raise PermanentError(f"undecodable {name} payload: {exc}") from exc
        if name == AI_RUN_FINDINGS_STORED:
            await self.write_run(run_id, "ai_run.findings_stored")
        else:
            await self.write_study(study_id, run_ids, f"review.{change.action or 'changed'}"[:64])

    async def write_study(self, study_id: uuid.UUID, run_ids: list[str], reason: str
                          ) -> list[Written]:
        async with self.db.read() as s:
            runs = (await s.execute(select(AiRun.id).where(
                AiRun.study_id == study_id, AiRun.status == AiRunStatus.COMPLETED))).scalars().all()
        wanted = {uuid.UUID(r) for r in run_ids}
        written: list[Written] = []
        for run_id in runs:
            if not wanted or run_id in wanted:
                written += await self.write_run(run_id, reason)
        return written

    async def write_run(self, run_id: uuid.UUID, reason: str) -> list[Written]:
        """Writes the SR (and SEG) of a completed run when their content is new; a run that is
        not completed has no stored findings and gets nothing."""
        async with self.db.read() as s:
            record = await load.load_run(s, run_id)
            if record is None:
                raise PermanentError(f"unknown AI run {run_id}")
            if record.status != AiRunStatus.COMPLETED:
                return []
            latest = await _latest(s, run_id)
        findings = included(record.findings)
        masks = [f for f in findings if f.mask_object_key]
        written = []
        sr_print = fingerprint(findings)
        if sr_print != latest.get("sr", ("", 0))[0] and (findings or "sr" in latest):
            written.append(await self._write_sr(record, findings, sr_print, latest, reason))
        seg_print = fingerprint(masks)
        if masks and seg_print != latest.get("seg", ("", 0))[0]:
            done = await self._write_seg(record, masks, seg_print, latest, reason)
            if done is not None:
                written.append(done)
        return written

    async def _write_sr(self, record: load.RunRecord, findings: list[DerivedFinding], print_: str,
                        latest: dict[str, tuple[str, int]], reason: str) -> Written:
        run = record.run
        version = latest.get("sr", ("", 0))[1] + 1
        async with self.db.read() as s:
            keys = await load.received_keys(
                s, record.study_id, sorted({f.sop_instance_uid for f in findings}))
            if not keys and record.series_id is not None:
                keys = dict(list((await load.series_keys(s, record.series_id)).items())[:1])
            previous = (await s.execute(select(Instance.object_key).join(
                DerivedObject, DerivedObject.instance_id == Instance.id).where(
                DerivedObject.ai_run_id == record.run.ai_run_id, DerivedObject.kind == "sr")
                .order_by(DerivedObject.version))).scalars().all()
        if not keys:
            raise PermanentError(f"AI run {run.ai_run_id}: no received image to reference")

        def build() -> bytes:
            sources = {uid: load.header(self.objects, key) for uid, key in keys.items()}
            prior = [load.full(self.objects, key) for key in previous]
            sr = build_sr(run, findings, sources, version=version,
                          series_instance_uid=uid_of(run.ai_run_id, "sr"),
                          sop_instance_uid=uid_of(run.ai_run_id, "sr", version), previous=prior)
            return _bytes(sr)

        data = await self._built(record, "sr", build)
        assert data is not None
        return await self._index(record, "sr", version, data, print_, len(findings), reason)

    async def _write_seg(self, record: load.RunRecord, masks: list[DerivedFinding], print_: str,
                         latest: dict[str, tuple[str, int]], reason: str) -> Written | None:
        run = record.run
        version = latest.get("seg", ("", 0))[1] + 1
        if record.series_id is None:
            return None
        async with self.db.read() as s:
            input_key = await load.model_input_key(s, record.series_id)
            keys = await load.series_keys(s, record.series_id)
        if input_key is None:
            raise TransientError(f"series of AI run {run.ai_run_id} has no model input")

        def build() -> bytes | None:
            order = load.slice_order(self.objects, input_key)
            uids = [uid for uid, _ in order]
            if len(set(uids)) != len(uids) or any(uid not in keys for uid in uids):
                log.warning("AI run %s: masks are not one per stored image; no SEG",
                            run.ai_run_id)
                return None
            sources = [load.header(self.objects, keys[uid]) for uid in uids]
            pairs = [(f, load.mask(self.objects, f.mask_object_key)) for f in masks]
            seg = build_seg(run, pairs, sources, version=version,
                            series_instance_uid=uid_of(run.ai_run_id, "seg"),
                            sop_instance_uid=uid_of(run.ai_run_id, "seg", version))
            return _bytes(seg)

        data = await self._built(record, "seg", build)
        if data is None:
            return None
        return await self._index(record, "seg", version, data, print_, len(masks), reason)

    async def _built(self, record: load.RunRecord, kind: str,
                     build: Callable[[], bytes | None]) -> bytes | None:
        """Runs a build off the loop; content highdicom refuses is a permanent, audited failure
        (the run's findings stay reviewable, only their DICOM form is missing)."""
        try:
            return await asyncio.to_thread(build)
        except (ValueError, TypeError, AttributeError) as exc:
            async with self.db.unit_of_work() as s:
                await audit.record(s, self.topology, "ai_result.dicom_failed", ACTOR,
                                   await _ref(s, record.study_id),
                                   error_class=type(exc).__name__, error_message=str(exc)[:2000],
                                   context={"kind": kind, "ai_run_id": record.run.ai_run_id,
                                            "model": record.run.model_name})
            raise PermanentError(f"{kind} of AI run {record.run.ai_run_id}: {exc}") from exc

    async def _index(self, record: load.RunRecord, kind: str, version: int, data: bytes,
                     print_: str, count: int, reason: str) -> Written:
        parsed = parse_instance(data, _MAX_BYTES)
        key = await asyncio.to_thread(self.objects.put, data)
        try:
            async with self.db.unit_of_work() as s:
                series_id = await _series(s, record.study_id, parsed.series_instance_uid,
                                          kind, parsed.attributes)
                instance = Instance(
                    id=uuid.uuid4(), series_id=series_id, study_id=record.study_id,
                    sop_instance_uid=parsed.sop_instance_uid, sop_class_uid=parsed.sop_class_uid,
                    transfer_syntax_uid=parsed.transfer_syntax_uid, instance_number=version,
                    object_key=key, size_bytes=len(data), attributes=parsed.attributes,
                    source=load.DERIVED)
                s.add(instance)
                await s.flush()
                await s.execute(update(Series).where(Series.id == series_id).values(
                    instance_count=Series.instance_count + 1))
                s.add(DerivedObject(
                    study_id=record.study_id, ai_run_id=uuid.UUID(record.run.ai_run_id),
                    instance_id=instance.id, kind=kind, version=version,
                    series_instance_uid=parsed.series_instance_uid,
                    sop_instance_uid=parsed.sop_instance_uid, fingerprint=print_,
                    finding_count=count, reason=reason))
                await audit.record(s, self.topology, "ai_result.dicom_written", ACTOR,
                                   await _ref(s, record.study_id), context={
                                       "kind": kind, "version": version,
                                       "ai_run_id": record.run.ai_run_id,
                                       "model": record.run.model_name, "findings": count,
                                       "series_instance_uid": parsed.series_instance_uid,
                                       "sop_instance_uid": parsed.sop_instance_uid,
                                       "reason": reason})
        except IntegrityError as exc:  # another delivery wrote this version first
            raise TransientError(f"{kind} v{version} of run {record.run.ai_run_id} "
                                 "written concurrently; re-checking") from exc
        log.info("AI run %s: %s version %d written (%d findings)", record.run.ai_run_id, kind,
                 version, count)
        return Written(kind, version, parsed.sop_instance_uid, parsed.series_instance_uid)


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


async def _latest(s: AsyncSession, run_id: uuid.UUID) -> dict[str, tuple[str, int]]:
    """kind → (fingerprint, version) of the run's newest version of each kind."""
    newest = select(DerivedObject.kind, func.max(DerivedObject.version).label("v")).where(
        DerivedObject.ai_run_id == run_id).group_by(DerivedObject.kind).subquery()
    rows = (await s.execute(select(DerivedObject.kind, DerivedObject.fingerprint,
                                   DerivedObject.version).join(
        newest, (newest.c.kind == DerivedObject.kind) & (newest.c.v == DerivedObject.version))
        .where(DerivedObject.ai_run_id == run_id))).all()
    return {kind: (fp, version) for kind, fp, version in rows}


async def _series(s: AsyncSession, study_id: uuid.UUID, series_uid: str, kind: str,
                  attributes: dict) -> uuid.UUID:
    found = (await s.execute(select(Series.id).where(
        Series.study_id == study_id, Series.series_instance_uid == series_uid))
    ).scalar_one_or_none()
    if found is not None:
        return found
    series = Series(id=uuid.uuid4(), study_id=study_id, series_instance_uid=series_uid,
                    modality=str(attributes.get("Modality", kind.upper())),
                    description=str(attributes.get("SeriesDescription", ""))[:256],
                    series_number=SR_SERIES_NUMBER if kind == "sr" else SEG_SERIES_NUMBER,
                    instance_count=0, preprocess_status=load.DERIVED)
    s.add(series)
    await s.flush()
    return series.id


async def _ref(s: AsyncSession, study_id: uuid.UUID) -> StudyRef:
    facility, accession, uid = (await s.execute(
        select(Facility.name, Study.accession, Study.study_instance_uid).join(
            Facility, Facility.id == Study.facility_id).where(Study.id == study_id))).one()
    return StudyRef(facility, accession, uid, study_id)
