"""Runs the review gateway under uvicorn until a stop event (python -m review_gateway.main)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import uvicorn

from review_gateway.app import create_app
from review_gateway.health.checks import HealthCheck
from review_gateway.settings import GatewaySettings
from review_gateway.web import access_log
from sidecar_core.security.edge_tls import EdgeConfigError
from sidecar_core.serving.grpc_server import stop_event_on_signals
from sidecar_core.serving.http_server import StoppableServer, bound_port, serve_until

log = logging.getLogger(__name__)


async def run(settings: GatewaySettings, stop: asyncio.Event,
              health_checks: Sequence[HealthCheck] = (),
              started: asyncio.Event | None = None) -> None:
    """Serves HTTP(S) until `stop` is set, then stops accepting and lets in-flight requests finish.

    `started` (optional) is set once the socket listens; `bound_port(server)` is logged.
    EdgeConfigError when plain HTTP would be served on a non-loopback address.
    """
    refusal = settings.refusal(settings.gateway_host, settings.gateway_port, "review gateway")
    if refusal:
        raise EdgeConfigError(refusal)
    app = create_app(settings, health_checks=health_checks)
    if settings.otlp_endpoint:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,metrics")
    config = uvicorn.Config(app, host=settings.gateway_host, port=settings.gateway_port,
                            log_level=settings.log_level.lower(), lifespan="on",
                            server_header=False, timeout_graceful_shutdown=10,
                            **settings.uvicorn_options())
    access_log.install()  # after uvicorn configured its loggers

    def listening(server: StoppableServer) -> None:
        log.info("review gateway listening on port %d (%s)", bound_port(server), settings.scheme)
        if started is not None:
            started.set()

    await serve_until(StoppableServer(config, listening), stop)


async def _main() -> None:
    settings = GatewaySettings()
    from sidecar_core.observability import logs

    logs.configure("review_gateway", settings.log_level, settings.log_format)
    from sidecar_core.observability import tracing

    tracing.setup("review_gateway", settings.otlp_endpoint)
    from sidecar_core.service import configure_pixel_budget

    configure_pixel_budget(settings)
    from review_gateway.health.mesh import mesh_checks

    try:
        await run(settings, stop_event_on_signals(), health_checks=mesh_checks(settings))
    except EdgeConfigError as exc:
        raise SystemExit(f"review gateway: error: {exc}") from None


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    finally:
        from sidecar_core.observability import tracing

        tracing.shutdown()
