"""uvicorn run the mesh's way: no signal handlers of its own (the caller's stop event decides),
a callback once the socket listens, and in-flight requests finished on stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn


class StoppableServer(uvicorn.Server):
    """uvicorn.Server that leaves signals to the process and reports when it listens."""

    def __init__(self, config: uvicorn.Config,
                 on_started: Callable[[StoppableServer], None] | None = None) -> None:
        super().__init__(config)
        self.on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started(self)


def bound_port(server: uvicorn.Server) -> int:
    """The port the server actually listens on (useful with port 0)."""
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return 0


async def serve_until(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serves until `stop` is set (or the server ends), then stops accepting and lets
    in-flight requests finish."""
    serving = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        waiting.cancel()
        await serving
