"""The normalizer service process: ai_run jobs, the NormalizerService for built-ins, the relay."""

from __future__ import annotations

import asyncio
import logging

from normalizer_svc.inference import RetryPolicy, builtin_normaliser
from normalizer_svc.servicer import NormalizerServicer, add_to_server
from normalizer_svc.settings import NormalizerSettings
from normalizer_svc.triton import TritonClient
from normalizer_svc.worker import AiRunWorker
from sidecar_core import service
from sidecar_core.circuit import CircuitBreakers
from sidecar_core.db import Database
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.registry import load_registry
from sidecar_core.security.enforcement import protected_server
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals

log = logging.getLogger(__name__)


async def run(settings: NormalizerSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    topology = settings.topology()
    registry = load_registry(settings.model_registry_path)
    db = Database(settings.database_url)
    bus = await Bus.connect(settings.nats_url, topology, name="normalizer_svc",
                            auth=settings.nats_auth("normalizer"),
                            replicas=settings.nats_stream_replicas)
    triton = TritonClient(settings.triton_url)
    breakers = CircuitBreakers(
        failure_threshold=settings.circuit_failure_threshold, cooldown_s=settings.circuit_cooldown_s
    )
    retry = RetryPolicy(
        max_attempts=settings.inference_max_attempts, budget_s=settings.inference_budget_s
    )
    mesh = settings.mesh_credentials("normalizer")
    worker = AiRunWorker(
        db,
        settings.object_store(),
        topology,
        registry,
        triton,
        breakers,
        retry,
        mesh=mesh,
    )
    builtins = {
        e.name: builtin_normaliser(e.builtin_name) for e in registry.models if e.builtin_name
    }
    server = protected_server(settings, "normalizer",
                              f"{settings.normalizer_host}:{settings.normalizer_port}",
                              db, topology, users=False)
    add_to_server(
        server,
        NormalizerServicer(
            builtins,
            version="builtin-1",
            output_specs={e.name: tuple(e.outputs) for e in registry.models},
        ),
    )
    await run_until_stopped(
        "normalizer_svc", stop, server=server,
        loops=[OutboxRelay.of_user(db, bus, "normalizer").run(stop),
               bus.consume(topology.ai_run_jobs(), worker.handle, stop)],
        closers=[triton.close, bus.close, db.close])


def main() -> None:
    service.main(run, NormalizerSettings())


if __name__ == "__main__":
    main()
