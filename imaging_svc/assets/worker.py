"""The preprocess worker: renders each series' assets and model input, announces the result."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydicom
from sqlalchemy import delete, select, update

from imaging_svc.assets.early_decode import DecodeCache, Decoded, lower_thread_priority
from imaging_svc.assets.overlay_worker import study_job
from imaging_svc.assets.series_assets import (
    AssetBlob,
    ObjectFailure,
    SeriesAssets,
    decode_tolerant,
    describe,
    display_assets,
    model_input_asset,
)
from imaging_svc.derived.load import DERIVED
from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.display.viewports import series_windows
from sidecar_core.errors import TransientError
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.redelivery import record_if_redelivered
from sidecar_core.messaging.subjects import ASSET_PREPROCESSED, Topology
from sidecar_core.observability import metrics
from sidecar_core.pixels.series import DecodedSeries, PreDecoded
from sidecar_core.pixels.windowing import presets_for
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import Asset, Instance, Series

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.preprocess"
DISPLAY_NICE = 10  # niceness of the display-rendering threads


@dataclass
class _ModelInputMade:
    series: DecodedSeries | None
    assets: SeriesAssets


def _digest(key: str, data: bytes) -> str:
    algo, _, digest = key.partition("/")
    return digest if algo == "sha256" else hashlib.sha256(data).hexdigest()


def series_presets(series: DecodedSeries) -> list[str]:
    return presets_for(series.modality, series.image.has_dicom_window)


def _low_priority() -> None:
    """Display rendering yields the CPU to the critical path (model input, inference)."""
    lower_thread_priority(DISPLAY_NICE)


class PreprocessWorker:
    """Model inputs first, announced at once; display assets afterwards, at low priority."""

    def __init__(
        self, db: Database, objects: ObjectStore, topology: Topology, threads: int = 2,
        cache: DecodeCache | None = None, durable_first: bool = False,
    ) -> None:
        self.db = db
        self.objects = objects
        self.topology = topology
        # instances decoded on arrival (early_decode.py); None or disabled: every one is read
        self.cache = cache
        # the model input synced before it is announced (else beside inference)
        self.durable_first = durable_first
        self.pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="render", initializer=_low_priority
        )
        self.display = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="display", initializer=_low_priority
        )
        # Reading an object verifies its digest (hashlib lets go of the GIL), so reading the
        # next instances on these threads overlaps with parsing this one.
        self.readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="read")
        self._displays: dict[uuid.UUID, asyncio.Event] = {}  # studies whose display is pending

    async def display_done(self, study_id: uuid.UUID) -> None:
        """Returns once no display assets of the study are being made (overlays wait here)."""
        pending = self._displays.get(study_id)
        if pending is not None:
            await pending.wait()

    async def handle(self, delivery: Delivery) -> None:
        job, study_id, ref = study_job(delivery, "preprocess")
        if delivery.attempt > 1:
            async with self.db.unit_of_work() as s:
                await record_if_redelivered(s, self.topology, ACTOR, ref, delivery, job.job_id)
        async with self.db.read() as s:
            series_rows = (
                (await s.execute(select(Series).where(
                    Series.study_id == study_id, Series.preprocess_status != DERIVED)))
                .scalars().all()
            )
            instances = (
                await s.execute(
                    select(Instance.series_id, Instance.object_key).where(
                        Instance.study_id == study_id, Instance.source != DERIVED
                    )
                )
            ).all()
        keys: dict[uuid.UUID, list[str]] = {}
        for series_id, key in instances:
            keys.setdefault(series_id, []).append(key)
        ready, failed, failed_objects = [], [], 0
        # Model inputs written but not yet synced: inference reads them from the page cache at
        # once (a killed process loses nothing); the job is acknowledged only once they are
        # durable, so a machine crash before that redoes it (and repairs them).
        unsynced: list[str] = []
        decoded: list[tuple[Series, DecodedSeries]] = []
        displayed = self._displays.setdefault(study_id, asyncio.Event())
        try:
            for series in series_rows:
                started = time.perf_counter()
                try:
                    made = await asyncio.to_thread(self._model_input, keys.get(series.id, []))
                except OSError as exc:  # the object store is unreachable: worth a retry
                    raise TransientError(
                        f"reading series {series.series_instance_uid}: {exc}"
                    ) from exc
                built = time.perf_counter()
                await self._store(series, made, ref, job.job_id, delivery.attempt,
                                  None if self.durable_first else unsynced)
                if self.cache is not None:  # what the cache decoded meanwhile goes too
                    self.cache.forget(keys.get(series.id, []))
                metrics.PREPROCESS_SECONDS.labels("model_input").observe(built - started)
                metrics.PREPROCESS_SECONDS.labels("store").observe(time.perf_counter() - built)
                failed_objects += len(made.assets.failures)
                if made.series is not None:
                    decoded.append((series, made.series))
                if made.assets.has_model_input:
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
            # Off the critical path: the AI run has its input already. The job is acknowledged
            # after this, so a crash here redelivers it; a second consumer loop takes the next
            # study's model input meanwhile.
            # The model inputs' durable write overlaps inference and the display assets.
            syncing = asyncio.ensure_future(asyncio.to_thread(self._sync, unsynced))
            try:
                await self._display(decoded, ref, job.job_id, delivery.attempt)
            finally:
                [synced] = await asyncio.gather(syncing, return_exceptions=True)
            if isinstance(synced, BaseException):
                raise synced
            log.info("preprocess job %s done: %d series ready, %d failed", job.job_id,
                     len(ready), len(failed))
        finally:
            displayed.set()
            if self._displays.get(study_id) is displayed:
                del self._displays[study_id]

    async def _display(self, decoded: list[tuple[Series, DecodedSeries]], ref: StudyRef,
                       job_id: str, attempt: int) -> None:
        loop = asyncio.get_running_loop()
        for series, decoded_series in decoded:
            started = time.perf_counter()
            blobs = await loop.run_in_executor(
                self.display, display_assets, decoded_series, self.pool
            )
            windows = await loop.run_in_executor(
                self.display, series_windows, decoded_series, series_presets(decoded_series)
            )
            await self._store_display(series, blobs, windows, ref, job_id, attempt,
                                      decoded_series.image.n_frames)
            metrics.PREPROCESS_SECONDS.labels("display").observe(time.perf_counter() - started)

    def _model_input(self, keys: list[str]) -> _ModelInputMade:
        """Reads and decodes the series once; builds its model input (display comes later).
        Instances decoded on arrival are taken from the cache; the others are read here."""
        early: dict[str, Decoded] = {}
        if self.cache is not None and self.cache.enabled:
            for key in keys:
                hit = self.cache.take(key)
                if hit is not None:
                    early[key] = hit
        # read on the reader threads, in order: each read overlaps with parsing the one before
        reads = iter(self.readers.map(self._read, [key for key in keys if key not in early]))
        datasets: list[pydicom.Dataset] = []
        images: list[PreDecoded | None] = []
        failures = []
        for key in keys:
            hit = early.get(key)
            if hit is not None:
                datasets.append(hit.dataset)
                images.append(hit.pre)
                continue
            read = next(reads)
            try:
                if isinstance(read, BaseException):
                    raise read
                datasets.append(pydicom.dcmread(io.BytesIO(read)))
                images.append(None)
            except FileNotFoundError:
                raise
            except Exception as exc:  # unreadable object: it fails, the series goes on
                failures.append((key, exc))
        if keys:
            log.info("model input: %d of %d instances decoded on arrival", len(early),
                     len(keys))
        assets = SeriesAssets()
        series, assets.failures = decode_tolerant(datasets, images)
        if early and self.cache is not None:  # stacked now: their memory serves what follows
            self.cache.forget(early)
        del early, datasets, images
        assets.failures.extend(
            ObjectFailure(key, type(exc).__name__, str(exc)) for key, exc in failures
        )
        if series is not None:
            describe(assets, series)
            made = model_input_asset(series)
            if isinstance(made, AssetBlob):
                assets.blobs.append(made)
            else:
                assets.model_input_error = made
        return _ModelInputMade(series, assets)

    def _sync(self, keys: list[str]) -> None:
        """The model inputs made durable (before the job is acknowledged)."""
        started = time.perf_counter()
        try:
            for key in keys:
                self.objects.sync(key)
        except OSError as exc:  # the job is redone and the model input written again
            raise TransientError(f"syncing the model input: {exc}") from exc
        metrics.PREPROCESS_SECONDS.labels("sync").observe(time.perf_counter() - started)

    def _read(self, key: str) -> bytes | Exception:
        """The object's bytes, or the error reading them (raised by the caller, in order)."""
        try:
            return self.objects.get(key)
        except Exception as exc:
            return exc

    def _rows(self, series: Series, blobs: list[AssetBlob],
              unsynced: list[str] | None = None, repair: bool = False) -> list[Asset]:
        """The blobs stored and their rows. With `unsynced`, the model input is written without
        waiting for the disk (its key is appended there: the caller syncs it before the job is
        acknowledged); `repair` rewrites one a machine crash may have left damaged."""
        rows = []
        for blob in blobs:
            if unsynced is not None and blob.kind == "model_input":
                key = self.objects.put_unsynced(blob.data, repair=repair)
                unsynced.append(key)
            else:
                key = self.objects.put(blob.data)  # content-addressed: sha256/<digest>
            rows.append(
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
                    sha256=_digest(key, blob.data),  # hashed once: 157 MB for a 300-slice CT
                    meta={"bytes": len(blob.data)},
                )
            )
        return rows

    async def _store(
        self, series: Series, made: _ModelInputMade, ref: StudyRef, job_id: str, attempt: int,
        unsynced: list[str] | None = None,
    ) -> None:
        assets = made.assets
        stored = await asyncio.to_thread(self._rows, series, assets.blobs, unsynced, attempt > 1)
        status = (
            "complete"
            if assets.has_model_input and not assets.failures
            else ("partial" if made.series is not None else "failed")
        )
        async with self.db.unit_of_work() as s:
            # viewports (on demand) and overlays follow the slice order stored here: stale ones go
            await s.execute(
                delete(Asset).where(
                    Asset.series_id == series.id,
                    Asset.kind.in_(("model_input", "viewport", "overlay")),
                )
            )
            s.add_all(stored)
            await s.execute(
                update(Series)
                .where(Series.id == series.id)
                .values(
                    preprocess_status=status, slice_count=assets.slice_count,
                    presets=assets.presets, slice_refs=assets.slice_refs or None,
                    windows=None,  # set with the display assets
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

    async def _store_display(
        self, series: Series, blobs: list[AssetBlob], windows: dict[str, Any], ref: StudyRef,
        job_id: str, attempt: int, slices: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(self.display, self._rows, series, blobs)
        async with self.db.unit_of_work() as s:
            await s.execute(
                delete(Asset).where(
                    Asset.series_id == series.id, Asset.kind.in_(("thumbnail", "preview"))
                )
            )
            s.add_all(stored)
            # what on-demand viewports window with; they can be requested from now on
            await s.execute(
                update(Series).where(Series.id == series.id).values(windows=windows or None)
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
                    "slices": slices,
                },
            )

