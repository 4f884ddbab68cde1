"""The ingest service process: Ingest RPC, DICOM adapters, completion tracker and outbox relay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pydicom.config

from ingest_svc.facilities import FacilityDirectory, FacilityRef
from ingest_svc.rpc.retrieve_servicer import RetrieveServicer
from ingest_svc.rpc.servicer import IngestServicer
from ingest_svc.rpc.viewport_servicer import ViewportServicer
from ingest_svc.settings import IngestSettings
from ingest_svc.study.arrival_notice import ArrivalNotices
from ingest_svc.study.completion import CompletionTracker
from ingest_svc.study.receive import Receiver
from ingest_svc.study.refused import RefusedStudies
from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from protos.sidecar.ingest.v1 import retrieve_service_pb2 as retrieve_pb
from protos.sidecar.ingest.v1 import retrieve_service_pb2_grpc as retrieve_grpc
from protos.sidecar.ingest.v1 import viewport_service_pb2 as viewport_pb
from protos.sidecar.ingest.v1 import viewport_service_pb2_grpc as viewport_grpc
from sidecar_core import service
from sidecar_core.audit_spool import AuditSpool
from sidecar_core.db import Database
from sidecar_core.display.viewports import ViewportRenderer
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.messaging.subjects import INSTANCES_STORED
from sidecar_core.security.enforcement import protected_server
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals

log = logging.getLogger(__name__)


async def run(settings: IngestSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    # Objects are stored as received and their UIDs checked by parse.py; pydicom's value
    # validation on read only warns and costs ~1.5 ms of CPU per instance.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    topology = settings.topology()
    db = Database(settings.database_url, pool_size=4)
    bus = await Bus.connect(settings.nats_url, topology, name="ingest_svc",
                            auth=settings.nats_auth("ingest"),
                            replicas=settings.nats_stream_replicas)
    spool = AuditSpool(settings.data_dir / "audit-spool" / "ingest_svc")
    refused = RefusedStudies()  # studies whose sender retries after our storage failure
    receiver = Receiver(
        db,
        settings.object_store(
            pack_segment_bytes=int(settings.pack_segment_mb * 1024 * 1024),
            pack_allocate_bytes=int(settings.pack_allocate_mb * 1024 * 1024)),
        topology,
        FacilityDirectory(db),
        int(settings.max_object_mb * 1024 * 1024),
        threads=settings.max_associations,
        statement_timeout_s=settings.dicom_store_timeout_s,
        spool=spool,
        refused=refused,
    )
    notice_subject = topology.subject(INSTANCES_STORED)

    async def notice(data: bytes) -> None:
        await bus.nc.publish(notice_subject, data)

    receiver.notices = ArrivalNotices(notice, asyncio.get_running_loop())
    completion = CompletionTracker(db, topology, settings.completion_poll_s, refused)
    server = protected_server(settings, "ingest",
                              f"{settings.ingest_host}:{settings.ingest_port}",
                              db, topology, users=True)
    server.register(
        pb_grpc.add_IngestServiceServicer_to_server,
        IngestServicer(receiver, completion),
        [pb.DESCRIPTOR.services_by_name["IngestService"].full_name],
    )
    retriever = RetrieveServicer(db, receiver.objects)
    completion.on_complete = retriever.prebuild
    server.register(retrieve_grpc.add_RetrieveServiceServicer_to_server, retriever,
                    [retrieve_pb.DESCRIPTOR.services_by_name["RetrieveService"].full_name])
    viewports = ViewportServicer(ViewportRenderer(db, receiver.objects))
    server.register(viewport_grpc.add_ViewportServiceServicer_to_server, viewports,
                    [viewport_pb.DESCRIPTOR.services_by_name["ViewportService"].full_name])
    relay = OutboxRelay.of_user(db, bus, "ingest")
    # Ready means warm: first queries, header parsing and the workers' connections are paid
    # for before any port accepts an object (as a readiness probe would expect).
    await receiver.warm_up()
    await completion.complete_quiet()
    await relay.relay_once()
    await receiver.facilities.by_name("")
    closers: list[Callable[[], Awaitable[None] | None]] = []
    if settings.dicom_port:
        from ingest_svc.dimse.scp import DimseServer

        dimse = DimseServer(receiver, settings, asyncio.get_running_loop())
        loop = asyncio.get_running_loop()

        def released(facility: FacilityRef, studies: set[str]) -> None:
            loop.call_soon_threadsafe(completion.on_association_released, facility.id, studies)

        dimse.on_released = released
        dimse.start()
        closers.append(dimse.stop)
    await run_until_stopped(
        "ingest_svc", stop, server=server,
        loops=[relay.run(stop), completion.run(stop),
               spool.run(db, topology, stop, settings.audit_spool_replay_s)],
        closers=[*closers, retriever.close, receiver.close, bus.close, db.close])


def main() -> None:
    service.main(run, IngestSettings())


if __name__ == "__main__":
    main()
