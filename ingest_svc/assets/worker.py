"""The preprocess worker process: renders each series' assets and announces the result."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import delete, select, update

from ingest_svc.assets.overlays import FindingMarks, marks_by_slice, render_overlay
from ingest_svc.assets.series_assets import ObjectFailure, SeriesAssets, build_series_assets
from ingest_svc.settings import IngestSettings
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit, outbox, service
from sidecar_core.audit import StudyRef
from sidecar_core.bus import Bus, Delivery
from sidecar_core.db import Database
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.grpc_server import stop_event_on_signals
from sidecar_core.objectstore import ObjectStore
from sidecar_core.outbox import OutboxRelay
from sidecar_core.redelivery import record_if_redelivered
from sidecar_core.service import run_until_stopped
from sidecar_core.store.models import Asset, Finding, Instance, Series
from sidecar_core.subjects import ASSET_PREPROCESSED, Topology

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.preprocess"


def study_job(delivery: Delivery, what: str) -> tuple[events_pb2.PreprocessJob, uuid.UUID,
                                                       StudyRef]:
    """Decodes a study-level job (preprocess and overlay share the message); a broken one is
    permanent."""
    try:
        job = events_pb2.PreprocessJob.FromString(delivery.data)
        study_id = uuid.UUID(job.study_id)
    except Exception as exc:
        raise PermanentError(f"undecodable {what} job: {exc}") from exc
    return job, study_id, StudyRef(job.study.facility, job.study.accession,
                                   job.study.study_instance_uid, study_id)


class PreprocessWorker:
    def __init__(
        self, db: Database, objects: ObjectStore, topology: Topology, threads: int = 2
    ) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")

    async def handle(self, delivery: Delivery) -> None:
        job, study_id, ref = study_job(delivery, "preprocess")
        if delivery.attempt > 1:
            async with self.db.unit_of_work() as s:
                await record_if_redelivered(s, self.topology, ACTOR, ref, delivery, job.job_id)
        async with self.db.read() as s:
            series_rows = (
                (await s.execute(select(Series).where(Series.study_id == study_id))).scalars().all()
            )
            instances = (
                await s.execute(
                    select(Instance.series_id, Instance.object_key).where(
                        Instance.study_id == study_id
                    )
                )
            ).all()
        keys: dict[uuid.UUID, list[str]] = {}
        for series_id, key in instances:
            keys.setdefault(series_id, []).append(key)
        ready, failed, failed_objects = [], [], 0
        for series in series_rows:
            try:
                assets = await asyncio.to_thread(self._render, keys.get(series.id, []))
            except OSError as exc:  # the object store is unreachable: worth a retry
                raise TransientError(f"reading series {series.series_instance_uid}: {exc}") from exc
            await self._store(series, assets, ref, job.job_id, delivery.attempt)
            failed_objects += len(assets.failures)
            if assets.has_model_input:
                ready.append(str(series.id))
            else:
                failed.append(str(series.id))
        done = events_pb2.PreprocessCompleted(
            job_id=job.job_id,
            study_id=str(study_id),
            ready_series_ids=ready,
            failed_series_ids=failed,
            failed_object_count=failed_objects,
            failed=not ready,
        )
        if not ready:
            done.error_class = "NoSeriesRendered"
            done.error_message = f"{len(failed)} series, none produced a model input"
        async with self.db.unit_of_work() as s:
            await outbox.enqueue(
                s, self.topology.subject(ASSET_PREPROCESSED), f"{job.job_id}:done", done
            )
        log.info("preprocess job %s done: %d series ready, %d failed", job.job_id, len(ready),
                 len(failed))

    def _render(self, keys: list[str]) -> SeriesAssets:
        datasets = []
        failures = []
        for key in keys:
            try:
                datasets.append(pydicom.dcmread(io.BytesIO(self.objects.get(key))))
            except FileNotFoundError:
                raise
            except Exception as exc:  # unreadable object: it fails, the series goes on
                failures.append((key, exc))
        assets = build_series_assets(datasets, self.pool)
        assets.failures.extend(
            ObjectFailure(key, type(exc).__name__, str(exc)) for key, exc in failures
        )
        return assets

    async def _store(
        self, series: Series, assets: SeriesAssets, ref: StudyRef, job_id: str, attempt: int
    ) -> None:
        stored = []
        for blob in assets.blobs:
            key = await asyncio.to_thread(self.objects.put, blob.data)
            stored.append(
                Asset(
                    study_id=series.study_id,
                    series_id=series.id,
                    kind=blob.kind,
                    preset=blob.preset,
                    slice_index=blob.slice_index,
                    sop_instance_uid=blob.sop_instance_uid,
                    frame=blob.frame,
                    object_key=key,
                    content_type=blob.content_type,
                    sha256=hashlib.sha256(blob.data).hexdigest(),
                    meta={"bytes": len(blob.data)},
                )
            )
        status = (
            "complete"
            if assets.has_model_input and not assets.failures
            else ("partial" if assets.blobs else "failed")
        )
        async with self.db.unit_of_work() as s:
            await s.execute(delete(Asset).where(Asset.series_id == series.id))
            s.add_all(stored)
            await s.execute(
                update(Series)
                .where(Series.id == series.id)
                .values(
                    preprocess_status=status, slice_count=assets.slice_count, presets=assets.presets
                )
            )
            problems = list(assets.failures)
            if assets.model_input_error is not None:
                problems.append(assets.model_input_error)
            for f in problems:
                await audit.record(
                    s,
                    self.topology,
                    "asset.preprocess_failed",
                    ACTOR,
                    ref,
                    job_id=job_id,
                    attempt=attempt,
                    error_class=f.error_class,
                    error_message=f.message,
                    context={
                        "series_instance_uid": series.series_instance_uid,
                        "sop_instance_uid": f.sop_instance_uid,
                        "series_status": status,
                    },
                )
            await audit.record(
                s,
                self.topology,
                "asset.series_rendered",
                ACTOR,
                ref,
                job_id=job_id,
                attempt=attempt,
                context={
                    "series_instance_uid": series.series_instance_uid,
                    "assets": len(stored),
                    "status": status,
                    "slices": assets.slice_count,
                },
            )


class OverlayWorker:
    """Consumes `job.v1.overlay`: draws a study's visible findings on its viewport images."""

    def __init__(self, db: Database, objects: ObjectStore, topology: Topology) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology

    async def handle(self, delivery: Delivery) -> None:
        job, study_id, ref = study_job(delivery, "overlay")
        if delivery.attempt > 1:
            async with self.db.unit_of_work() as s:
                await record_if_redelivered(s, self.topology, ACTOR, ref, delivery, job.job_id)
        async with self.db.read() as s:
            series_rows = (
                (await s.execute(select(Series).where(Series.study_id == study_id))).scalars().all()
            )
            findings = (
                (
                    await s.execute(
                        select(Finding).where(
                            Finding.study_id == study_id, Finding.visible.is_(True)
                        )
                    )
                )
                .scalars()
                .all()
            )
            viewports = (
                (
                    await s.execute(
                        select(Asset).where(Asset.study_id == study_id, Asset.kind == "viewport")
                    )
                )
                .scalars()
                .all()
            )
        rendered = 0
        for series in series_rows:
            mine = [f for f in findings if f.series_instance_uid == series.series_instance_uid]
            views = [v for v in viewports if v.series_id == series.id]
            if not mine or not views:
                continue
            rows = await asyncio.to_thread(self._render, mine, views)
            async with self.db.unit_of_work() as s:
                await s.execute(
                    delete(Asset).where(Asset.series_id == series.id, Asset.kind == "overlay")
                )
                s.add_all(rows)
            rendered += len(rows)
        async with self.db.unit_of_work() as s:
            await audit.record(
                s,
                self.topology,
                "asset.overlays_rendered",
                ACTOR,
                ref,
                job_id=job.job_id,
                attempt=delivery.attempt,
                context={"overlays": rendered, "findings": len(findings)},
            )

    def _render(self, findings: list[Finding], views: list[Asset]) -> list[Asset]:
        slice_index = {(v.sop_instance_uid, v.frame or 1): v.slice_index for v in views}
        marks = marks_by_slice(
            [
                FindingMarks(
                    f.label,
                    f.sop_instance_uid,
                    f.frame or 1,
                    f.bbox_px,
                    self._mask(f.mask_object_key),
                )
                for f in findings
            ],
            lambda sop, frame: slice_index.get((sop, frame)),
        )
        rows = []
        for v in views:
            if v.slice_index not in marks:
                continue
            png = render_overlay(self.objects.get(v.object_key), marks[v.slice_index])
            rows.append(
                Asset(
                    study_id=v.study_id,
                    series_id=v.series_id,
                    kind="overlay",
                    preset=v.preset,
                    slice_index=v.slice_index,
                    sop_instance_uid=v.sop_instance_uid,
                    frame=v.frame,
                    object_key=self.objects.put(png),
                    content_type="image/png",
                    sha256=hashlib.sha256(png).hexdigest(),
                    meta={"bytes": len(png)},
                )
            )
        return rows

    def _mask(self, key: str) -> np.ndarray | None:
        if not key:
            return None
        with np.load(io.BytesIO(self.objects.get(key))) as npz:
            return np.asarray(npz["mask"]).astype(bool)


async def run(settings: IngestSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    topology = settings.topology()
    db = Database(settings.database_url)
    bus = await Bus.connect(settings.nats_url, topology, name="preprocess",
                            replicas=settings.nats_stream_replicas)
    worker = PreprocessWorker(db, settings.object_store(), topology)
    overlays = OverlayWorker(db, worker.objects, topology)
    suffix = f"-{settings.instance}" if settings.instance else ""
    ready = Path(settings.data_dir) / "run" / f"preprocess{suffix}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(str(os.getpid()))
    await run_until_stopped(
        "preprocess worker", stop,
        loops=[OutboxRelay(db, bus).run(stop),
               bus.consume(topology.preprocess_jobs(), worker.handle, stop),
               bus.consume(topology.overlay_jobs(), overlays.handle, stop)],
        closers=[lambda: ready.unlink(missing_ok=True), bus.close, db.close])


def main() -> None:
    service.main(run, IngestSettings())


if __name__ == "__main__":
    main()
