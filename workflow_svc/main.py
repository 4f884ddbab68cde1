"""The workflow service process: WorkflowService gRPC, the events consumer and the outbox relay."""

from __future__ import annotations

import asyncio
import logging

import grpc

from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as pb_grpc
from sidecar_core import atna, audit_chain, service
from sidecar_core.db import Database
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.observability import metrics
from sidecar_core.registry import load_registry
from sidecar_core.security.enforcement import protected_server
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals
from workflow_svc.identity import passwords
from workflow_svc.identity import servicer as account_servicer
from workflow_svc.operations import facility_settings
from workflow_svc.operations import servicer as operations_servicer
from workflow_svc.operations.dead_letters import DeadLetterAuditor, DeadLetters
from workflow_svc.operations.retention import Scheduler as RetentionScheduler
from workflow_svc.priors.jobs import enqueue_find as find_priors
from workflow_svc.priors.worker import PriorsConfig, PriorsWorker
from workflow_svc.report_loop import servicer as report_servicer
from workflow_svc.report_loop.export import DerivedResults, ExportWorker
from workflow_svc.report_loop.handoff import HandoffWorker
from workflow_svc.report_loop.legacy_reports import match_waiting_reports
from workflow_svc.review import servicer as review_servicer
from workflow_svc.settings import WorkflowSettings
from workflow_svc.study.pipeline import Pipeline
from workflow_svc.study.servicer import WorkflowServicer

log = logging.getLogger(__name__)


async def run(settings: WorkflowSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    topology = settings.topology()
    registry = load_registry(settings.model_registry_path)
    db = Database(settings.database_url)
    # outbound rules and the key of secret settings (docs/deployment.md); plaintext secrets
    # of an older database are sealed now
    egress, box = settings.egress_policy(), settings.secret_box()
    sealed = await facility_settings.seal_plaintext(db, box)
    if sealed:
        log.info("sealed %d secret setting(s) stored in plaintext", sealed)
    log.info("egress allow-list: %s; secret key %s", egress.describe(), box.key_id)
    bus = await Bus.connect(settings.nats_url, topology, name="workflow_svc",
                            auth=settings.nats_auth("workflow"),
                            replicas=settings.nats_stream_replicas)
    server = protected_server(settings, "workflow",
                              f"{settings.workflow_host}:{settings.workflow_port}",
                              db, topology, users=True)
    server.register(
        pb_grpc.add_WorkflowServiceServicer_to_server,
        WorkflowServicer(db),
        [pb.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
    )
    report_servicer.register(server, db, topology, egress, box)
    operations_servicer.register(server, DeadLetters(db, bus, topology), db, topology,
                                 registry.names(), egress, box)
    passwords.set_concurrency(settings.password_hash_concurrency)
    review_servicer.register(server, db, topology, settings.login_limits(),
                             settings.token_key_set())
    account_servicer.register(server, db, topology)
    # an official report that arrived before its study completes it once it is registered
    # and a covered study's priors are looked for at the facility's PACS (docs/priors.md)
    pipeline = Pipeline(db, topology, registry,
                        after_registered=[match_waiting_reports, find_priors])
    # a prior read by WADO-RS is stored through the ingest service's Ingest RPC
    ingest_channel: list[grpc.aio.Channel] = []

    def ingest_stub() -> ingest_grpc.IngestServiceStub:
        if not ingest_channel:
            ingest_channel.append(settings.mesh_credentials("workflow").aio_channel(
                settings.ingest_address))
        return ingest_grpc.IngestServiceStub(ingest_channel[0])

    async def close_ingest() -> None:
        for channel in ingest_channel:
            await channel.close()

    priors_worker = PriorsWorker(db, topology, tls=settings.scu_context, egress=egress,
                                 box=box, ingest=ingest_stub,
                                 config=PriorsConfig(settings.dicom_ae_title,
                                                     settings.priors_limit,
                                                     settings.priors_lookback_years))
    streams = [spec.name for spec in topology.streams]
    # the IHE ATNA export (docs/audit.md), only when an audit repository is configured
    atna_loops = [] if not settings.audit_syslog else [atna.forwarder_of(
        db, settings.audit_syslog, settings.audit_syslog_ca, settings.audit_syslog_cert,
        settings.audit_syslog_key, settings.audit_source_id,
        settings.audit_enterprise_site).run(stop)]
    # retention: expired objects and report text deleted, packs compacted (one pass at a time)
    retention = RetentionScheduler(settings.database_url, settings.object_store(), topology,
                                   settings.retention_interval_s, settings.retention_options())
    await run_until_stopped(
        "workflow_svc", stop, server=server,
        loops=[OutboxRelay.of_user(db, bus, "workflow").run(stop),
               metrics.poll_consumers(bus.js, streams, stop),
               audit_chain.poll_heads(db, stop),
               bus.consume(topology.workflow_events(), pipeline.handle, stop),
               bus.consume(topology.handoff_jobs(),
                           HandoffWorker(db, topology, egress=egress, box=box).handle, stop),
               bus.consume(topology.export_jobs(), ExportWorker(
                   db, topology, DerivedResults(settings.object_store()),
                   tls=settings.scu_context, egress=egress).handle, stop),
               bus.consume(topology.priors_jobs(), priors_worker.handle, stop),
               bus.consume(topology.dead_letter_audit(), DeadLetterAuditor(db, topology).handle,
                           stop), retention.run(stop), *atna_loops],
        closers=[close_ingest, bus.close, db.close])


def main() -> None:
    service.main(run, WorkflowSettings())


if __name__ == "__main__":
    main()
