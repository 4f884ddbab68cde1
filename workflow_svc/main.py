"""The workflow service process: WorkflowService gRPC, the events consumer and the outbox relay."""

from __future__ import annotations

import asyncio
import logging

from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as pb_grpc
from sidecar_core.bus import Bus
from sidecar_core.db import Database
from sidecar_core.grpc_server import GrpcServer, stop_event_on_signals
from sidecar_core.outbox import OutboxRelay
from workflow_svc.pipeline import Pipeline
from workflow_svc.registry import load_registry
from workflow_svc.servicer import WorkflowServicer
from workflow_svc.settings import WorkflowSettings

log = logging.getLogger(__name__)


async def run(settings: WorkflowSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    topology = settings.topology()
    registry = load_registry(settings.model_registry_path)
    db = Database(settings.database_url)
    bus = await Bus.connect(settings.nats_url, topology, name="workflow_svc")
    server = GrpcServer(f"{settings.workflow_host}:{settings.workflow_port}")
    server.register(
        pb_grpc.add_WorkflowServiceServicer_to_server,
        WorkflowServicer(db),
        [pb.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
    )
    pipeline = Pipeline(db, topology, registry)
    relay = OutboxRelay(db, bus)
    tasks = [
        asyncio.create_task(relay.run(stop)),
        asyncio.create_task(bus.consume(topology.workflow_events(), pipeline.handle, stop)),
    ]
    port = await server.start()
    log.info("workflow_svc serving gRPC on %s:%d", settings.workflow_host, port)
    await stop.wait()
    await server.stop(10)
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.close()
    await db.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run(WorkflowSettings()))


if __name__ == "__main__":
    main()
