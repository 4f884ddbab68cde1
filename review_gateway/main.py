"""Runs the review gateway under uvicorn until a stop event (python -m review_gateway.main)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn

from review_gateway import access_log
from review_gateway.app import create_app
from review_gateway.health import HealthCheck
from review_gateway.settings import GatewaySettings
from sidecar_core.grpc_server import stop_event_on_signals

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the caller's stop event decides)."""

    def __init__(self, config: uvicorn.Config, started: asyncio.Event | None) -> None:
        super().__init__(config)
        self.started_event = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("review gateway listening on port %d", bound_port(self))
            if self.started_event is not None:
                self.started_event.set()


async def run(settings: GatewaySettings, stop: asyncio.Event,
              health_checks: Sequence[HealthCheck] = (),
              started: asyncio.Event | None = None) -> None:
    """Serves HTTP until `stop` is set, then stops accepting and lets in-flight requests finish.

    `started` (optional) is set once the socket listens; `bound_port(server)` is logged.
    """
    app = create_app(settings, health_checks=health_checks)
    config = uvicorn.Config(app, host=settings.gateway_host, port=settings.gateway_port,
                            log_level=settings.log_level.lower(), lifespan="on",
                            proxy_headers=False, server_header=False, timeout_graceful_shutdown=10)
    access_log.install()  # after uvicorn configured its loggers
    server = _Server(config, started)
    serving = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        waiting.cancel()
        await serving


def bound_port(server: uvicorn.Server) -> int:
    """The port the server actually listens on (useful with gateway_port=0)."""
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return 0


async def _main() -> None:
    settings = GatewaySettings()
    logging.basicConfig(level=settings.log_level)
    from review_gateway.dependencies import mesh_checks

    await run(settings, stop_event_on_signals(), health_checks=mesh_checks(settings))


if __name__ == "__main__":
    asyncio.run(_main())
