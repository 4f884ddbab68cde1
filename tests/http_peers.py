"""Real HTTP peers for tests: any ASGI app served by uvicorn on a loopback port in a thread."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response

from tests.servers import free_port, wait_port


@contextmanager
def serve(app: Any, port: int | None = None, **options: Any) -> Iterator[int]:
    """Serves `app` on 127.0.0.1 until the block ends; yields the port. `options` go to
    uvicorn.Config (e.g. ssl_certfile, ssl_keyfile for https)."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass
class WebhookReceiver:
    """A hospital endpoint that checks the HMAC-SHA256 signature the way the docs describe."""

    secret: str
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/sidecar/status")
        async def status(request: Request) -> Response:
            body = await request.body()
            ts = request.headers.get("x-sidecar-timestamp", "")
            expected = "sha256=" + hmac.new(self.secret.encode(), ts.encode() + b"." + body,
                                            hashlib.sha256).hexdigest()
            signature = request.headers.get("x-sidecar-signature", "")
            fresh = ts.isdigit() and abs(time.time() - int(ts)) < 300
            if not (fresh and hmac.compare_digest(expected, signature)):
                self.refused += 1
                return Response(status_code=401)
            self.received.append({"body": body, "headers": dict(request.headers)})
            return Response(status_code=204)

        return app
