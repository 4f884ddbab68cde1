"""The imaging service process (`preprocess`): display assets and model input of each series,
overlays of each AI run, and AI results written as DICOM SR/SEG; consumes their bus jobs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nats.aio.msg import Msg

from imaging_svc.assets.early_decode import DecodeCache, keys_to_decode
from imaging_svc.assets.overlay_worker import OverlayWorker
from imaging_svc.assets.worker import PreprocessWorker
from imaging_svc.derived.writer import DerivedResultsWriter
from imaging_svc.settings import ImagingSettings
from sidecar_core import service
from sidecar_core.db import Database
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.messaging.subjects import INSTANCES_STORED
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals


async def run(settings: ImagingSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    topology = settings.topology()
    db = Database(settings.database_url)
    bus = await Bus.connect(settings.nats_url, topology, name="preprocess",
                            auth=settings.nats_auth("preprocess"),
                            replicas=settings.nats_stream_replicas)
    objects = settings.object_store()
    cache = DecodeCache(objects.get, settings.decode_cache_mb * 2**20, settings.decode_cache_ttl_s)
    worker = PreprocessWorker(db, objects, topology, cache=cache,
                              durable_first=settings.model_input_durable_first)
    if cache.enabled:  # decode on arrival: the ingest's notices of stored instances
        registry = settings.registry()

        async def noticed(msg: Msg) -> None:
            cache.notice(keys_to_decode(msg.data, registry))

        await bus.nc.subscribe(topology.subject(INSTANCES_STORED), cb=noticed)
    overlays = OverlayWorker(db, worker.objects, topology, worker.display_done)
    results = DerivedResultsWriter(db, worker.objects, topology)  # AI results as DICOM SR/SEG
    suffix = f"-{settings.instance}" if settings.instance else ""
    ready = Path(settings.data_dir) / "run" / f"preprocess{suffix}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(str(os.getpid()))
    await run_until_stopped(
        "preprocess worker", stop,
        loops=[OutboxRelay.of_user(db, bus, "preprocess").run(stop),
               # two loops on one durable: a study's model input need not wait for the
               # previous study's display assets
               bus.consume(topology.preprocess_jobs(), worker.handle, stop),
               bus.consume(topology.preprocess_jobs(), worker.handle, stop),
               bus.consume(topology.overlay_jobs(), overlays.handle, stop),
               bus.consume(topology.derived_results_runs(), results.handle, stop),
               bus.consume(topology.derived_results_reviews(), results.handle, stop)],
        closers=[lambda: ready.unlink(missing_ok=True), bus.close, cache.close, db.close])


def main() -> None:
    service.main(run, ImagingSettings())


if __name__ == "__main__":
    main()
