"""The life of a service process: serve, run background loops, then drain and close on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sidecar_core.serving.grpc_server import GrpcServer

log = logging.getLogger(__name__)


async def run_until_stopped(
    name: str,
    stop: asyncio.Event,
    *,
    server: GrpcServer | None = None,
    loops: Sequence[Coroutine[Any, Any, None]] = (),
    closers: Sequence[Callable[[], Awaitable[None] | None]] = (),
) -> None:
    """Starts `loops` and `server`, waits for `stop`, then reports NOT_SERVING, stops accepting,
    lets in-flight calls finish, waits for the loops (they watch `stop`) and closes in order."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    if server is not None:
        port = await server.start()
        log.info("%s serving gRPC on %s (port %d)", name, server.address, port)
    else:
        log.info("%s running", name)
    await stop.wait()
    if server is not None:
        await server.stop(10)
    await asyncio.gather(*tasks, return_exceptions=True)
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result


def main(run: Callable[[Any], Coroutine[Any, Any, None]], settings: Any) -> None:
    """Entry point of `python -m <service>`: logging, then `run(settings)` until SIGTERM."""
    from sidecar_core.observability import logs

    name = service_name(run)
    logs.configure(name, getattr(settings, "log_level", "INFO"),
                   getattr(settings, "log_format", "json"))
    from sidecar_core.observability import tracing

    tracing.setup(name, getattr(settings, "otlp_endpoint", ""))
    from sidecar_core.observability import metrics

    metrics.serve(int(getattr(settings, "metrics_port", 0) or 0),
                  str(getattr(settings, "metrics_host", "") or "127.0.0.1"))
    configure_pixel_budget(settings)
    try:
        asyncio.run(run(settings))
    finally:
        tracing.shutdown()


def configure_pixel_budget(settings: Any) -> None:
    """The process's pixel budget from its settings (SIDECAR_MAX_PIXELS, _MAX_PIXEL_BYTES)."""
    if hasattr(settings, "max_pixels"):
        from sidecar_core.pixels import budget

        budget.configure(budget.PixelBudget(settings.max_pixels, settings.max_pixel_bytes))


def service_name(run: Callable[..., Any]) -> str:
    """The process's name in logs and traces: its package (`ingest_svc`), or `preprocess` for
    the imaging service's process, also when started as `python -m` (the module is `__main__`)."""
    module = run.__module__
    if module == "__main__":
        import sys

        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return "preprocess" if module.startswith("imaging_svc") else module.split(".")[0]
