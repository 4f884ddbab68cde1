"""The overlay job: draws a study's visible findings on its viewport images."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import Awaitable, Callable

import numpy as np
from sqlalchemy import delete, select

from imaging_svc.assets.overlays import FindingMarks, SliceMarks, marks_by_slice, render_overlay
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.display.viewports import ViewportRenderer
from sidecar_core.errors import PermanentError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.redelivery import record_if_redelivered
from sidecar_core.messaging.subjects import Topology
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import Asset, Finding, Series

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


class OverlayWorker:
    """Consumes `job.v1.overlay`: draws a study's visible findings on the viewport images of
    their slices (viewports rendered on demand where they do not exist yet)."""

    def __init__(self, db: Database, objects: ObjectStore, topology: Topology,
                 display_done: Callable[[uuid.UUID], Awaitable[None]] | None = None,
                 viewports: ViewportRenderer | None = None) -> None:
        self.db = db
        self.objects = objects
        self.viewports = viewports or ViewportRenderer(db, objects)
        self.topology = topology
        self.display_done = display_done

    async def handle(self, delivery: Delivery) -> None:
        job, study_id, ref = study_job(delivery, "overlay")
        if delivery.attempt > 1:
            async with self.db.unit_of_work() as s:
                await record_if_redelivered(s, self.topology, ACTOR, ref, delivery, job.job_id)
        if self.display_done is not None:  # viewports still being made come first
            await self.display_done(study_id)
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
        rendered = 0
        for series in series_rows:
            mine = [f for f in findings if f.series_instance_uid == series.series_instance_uid]
            if not mine or not series.slice_refs or not series.windows:
                continue
            rows = await self._series_overlays(series, mine)
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

    async def _series_overlays(self, series: Series, findings: list[Finding]) -> list[Asset]:
        """One overlay per marked slice and preset, on that slice's viewport (made if need be)."""
        index = {(str(sop), int(frame or 1)): z
                 for z, (sop, frame) in enumerate(series.slice_refs or [])}
        marks = await asyncio.to_thread(self._marks, findings, index)
        rows = []
        for z in sorted(marks):
            sop, frame = series.slice_refs[z] if series.slice_refs else ("", 1)
            for preset in sorted(series.windows or {}):
                view = (await self.viewports.ensure_for(series, z, preset)).asset
                rows.append(await asyncio.to_thread(
                    self._overlay, view, marks[z], str(sop), int(frame or 1)))
        return rows

    def _marks(self, findings: list[Finding], index: dict[tuple[str, int], int]
               ) -> dict[int, SliceMarks]:
        return marks_by_slice(
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
            lambda sop, frame: index.get((sop, frame)),
        )

    def _overlay(self, view: Asset, marks: SliceMarks, sop: str, frame: int) -> Asset:
        png = render_overlay(self.objects.get(view.object_key), marks)
        return Asset(
            study_id=view.study_id,
            series_id=view.series_id,
            kind="overlay",
            preset=view.preset,
            slice_index=view.slice_index,
            sop_instance_uid=sop,
            frame=frame,
            object_key=self.objects.put(png),
            content_type="image/png",
            sha256=hashlib.sha256(png).hexdigest(),
            meta={"bytes": len(png)},
        )

    def _mask(self, key: str) -> np.ndarray | None:
        if not key:
            return None
        with np.load(io.BytesIO(self.objects.get(key))) as npz:
            return np.asarray(npz["mask"]).astype(bool)
