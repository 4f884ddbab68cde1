"""The request body bound of the JSON API: every body is read up to SIDECAR_MAX_JSON_BYTES (and no
further) before a route sees it; a larger one is refused with 413 while it is being read,
whatever Content-Length says (chunked bodies included). STOW-RS streams its own bodies and is
exempt (review_gateway.dicomweb.router bounds it)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from review_gateway.errors import error_body

log = logging.getLogger(__name__)
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
REASON = "REQUEST_TOO_LARGE"
# Before a 413, the rest of a body is read and dropped up to this much (as a web server's
# lingering close does), so that a client that sends a little too much still reads the answer;
# beyond it the connection is closed with the rest unread.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_S = 2.0


async def drain(receive: Any, max_bytes: int = DRAIN_BYTES, max_s: float = DRAIN_S) -> bool:
    """Reads and drops the rest of a request body, at most `max_bytes` for at most `max_s`;
    True when the body ended (the connection may stay open), False when it was given up."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    dropped = 0
    while dropped <= max_bytes:
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return False
        if message["type"] != "http.request":
            return False
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def too_large(message: str, close: bool) -> tuple[dict[str, Any], bytes]:
    """The response start and body of a 413 (the gateway's JSON error shape); with `close` the
    connection is closed afterwards so that the rest of the body is never read."""
    body = json.dumps(error_body("RESOURCE_EXHAUSTED", REASON, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *([(b"connection", b"close")] if close else [])]
    return {"type": "http.response.start", "status": 413, "headers": headers}, body


class _Warnings:
    """At most one log line a minute for the refusals (a flood of them is one line)."""

    def __init__(self) -> None:
        self.last = -1e9
        self.suppressed = 0

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < 60:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more refused in the last minute)" if self.suppressed else ""
        log.warning(message + more, *args)
        self.last, self.suppressed = now, 0


class BodyLimitMiddleware:
    """ASGI middleware: reads a request's body (at most `max_bytes`) before the app, then hands
    it over; 413 REQUEST_TOO_LARGE beyond. `exempt(scope)` names the requests that stream their
    bodies themselves."""

    def __init__(self, app: Any, max_bytes: int, exempt: Callable[[dict[str, Any]], bool],
                 setting: str = "SIDECAR_MAX_JSON_BYTES") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt
        self.setting = setting
        self.warnings = _Warnings()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            ended = declared <= DRAIN_BYTES and await drain(receive)
            await self._refuse(scope, send, f"{declared} bytes declared", close=not ended)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        messages: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees it as it would have
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                ended = not message.get("more_body", False) or await drain(receive)
                await self._refuse(scope, send, f"more than {self.max_bytes} bytes sent",
                                   close=not ended)
                return
            if not message.get("more_body", False):
                break
        if len(messages) > 1 and messages[-1]["type"] == "http.request":
            body = b"".join(m.get("body", b"") for m in messages)
            messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], send: Any, what: str, close: bool) -> None:
        client = scope.get("client") or ("", 0)
        self.warnings.warn("request body refused: %s %s from %s: %s (limit %d bytes)",
                           scope["method"], scope["path"], client[0], what, self.max_bytes)
        start, body = too_large(f"the request body exceeds {self.max_bytes} bytes "
                                f"({self.setting})", close)
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
