"""Live worklist updates: bus audit events → scoped server-sent events (`GET /api/v1/events`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg

from protos.sidecar.events.v1 import events_pb2
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth import forwarding
from review_gateway.auth.tokens import Principal
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES, ApiError
from review_gateway.review import views as review_views
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.subjects import AUDIT, Topology

log = logging.getLogger(__name__)
# Audit events that change what a worklist row shows (not e.g. study.duplicate_seen).
_PREFIXES = ("study.received", "study.state_changed", "study.eligible", "study.ineligible",
             "study.updated", "study.reopened", "ai_run.", "review.study_claimed",
             "review.study_released", "review.finding_", "review.completed")
COALESCE_S = 0.05  # events of one study within this time give one update
HEARTBEAT_S = 15.0


@dataclass(eq=False)
class Subscriber:
    """One open event stream: what its caller may see and its queue of rows."""

    me: Principal
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=256))

    def sees(self, facility: str) -> bool:
        return self.me.sees(facility)


class EventHub:
    """One NATS subscription per gateway, fanned out to the open streams by facility."""

    def __init__(self, nats_url: str, topology: Topology,
                 review: Callable[[], ReviewClient],
                 still_valid: Callable[[Principal], Awaitable[None]] | None = None,
                 auth: NatsAuth | None = None, recheck_s: float = 5.0) -> None:
        self.nats_url = nats_url
        # A streaming session is re-checked (logout, disabled user, revoked sessions) at least
        # this often, busy or idle: the revocation cache time.
        self.recheck_s = max(0.5, min(recheck_s, HEARTBEAT_S))
        self.auth = auth
        self.still_valid = still_valid
        self.topology = topology
        self.review = review
        self.subscribers: set[Subscriber] = set()
        self._bus: Bus | None = None
        self._start = asyncio.Lock()
        self._pending: dict[str, str] = {}  # study id → facility, in arrival order
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def _ensure_started(self) -> None:
        async with self._start:
            if self._bus is None and self.nats_url:
                # the gateway's NATS user may only listen (no stream management)
                self._bus = await Bus.connect(self.nats_url, self.topology, name="gateway-events",
                                              auth=self.auth, declare=False)
                await self._bus.nc.subscribe(f"{self.topology.prefix}.{AUDIT}.>", cb=self._on_msg)
                self._worker = asyncio.create_task(self._announce_loop())

    async def _on_msg(self, msg: Msg) -> None:
        try:
            event = events_pb2.AuditRecorded.FromString(msg.data)
        except Exception:  # not ours to judge; the audit consumer reports bad payloads
            return
        if not event.study_id or not event.type.startswith(_PREFIXES):
            return
        if not any(s.sees(event.study.facility) for s in self.subscribers):
            return
        self._pending[event.study_id] = event.study.facility
        self._wake.set()

    async def _announce_loop(self) -> None:
        """Fetches each changed study's row once per burst and queues it for its viewers."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_S)
            self._wake.clear()
            pending, self._pending = self._pending, {}
            for study_id, facility in pending.items():
                await self._announce(study_id, facility)

    async def _announce(self, study_id: str, facility: str) -> None:
        # The workflow service answers only for a user: one of the viewers who may see the
        # study (their token is forwarded; the row is the same for all of them).
        now = time.time()
        viewer = next((s.me for s in self.subscribers
                       if s.sees(facility) and s.me.expires_at > now), None)
        if viewer is None:
            return
        try:
            client = self.review()
            with forwarding.acting_for(viewer):
                reply = await client.call(client.stub.GetStudyDetail,
                                          rpb.GetStudyDetailRequest(study_id=study_id))
        except ApiError as exc:
            log.warning("live update of a study skipped: %s", exc.reason)
            return
        row = reply.study
        data = review_views.event_json(row).model_dump(mode="json")
        for subscriber in list(self.subscribers):
            if subscriber.sees(row.study.facility):
                with contextlib.suppress(asyncio.QueueFull):  # a stalled client misses updates
                    subscriber.queue.put_nowait(data)

    async def stream(self, request: Request, me: Principal) -> AsyncIterator[bytes]:
        subscriber = Subscriber(me)
        self.subscribers.add(subscriber)
        try:
            yield b"retry: 2000\n: connected\n\n"
            checked = pinged = time.monotonic()
            while not await request.is_disconnected():
                if me.expires_at <= time.time():
                    return
                if self.still_valid is not None and time.monotonic() - checked >= self.recheck_s:
                    checked = time.monotonic()
                    try:
                        await self.still_valid(me)  # logged out, disabled, revoked: end it
                    except ApiError as exc:
                        yield f": session ended: {exc.reason}\n\n".encode()
                        return
                try:
                    data = await asyncio.wait_for(subscriber.queue.get(), self.recheck_s)
                except TimeoutError:
                    if time.monotonic() - pinged >= HEARTBEAT_S:
                        pinged = time.monotonic()
                        yield b": ping\n\n"
                    continue
                yield f"event: study\ndata: {json.dumps(data)}\n\n".encode()
        finally:
            self.subscribers.discard(subscriber)

    async def close(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._bus is not None:
            bus, self._bus = self._bus, None
            await bus.close()

    def router(self, principal: Callable[..., Any]) -> APIRouter:
        router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

        @router.get("/events", response_class=StreamingResponse, responses={200: {
            "description": "Server-sent events: `study` events whose data is a StudyEvent "
                           "(components.schemas.StudyEvent), `: ping` comments meanwhile",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
        async def events(request: Request, me: Principal = Depends(principal)
                         ) -> StreamingResponse:
            """`study` events for every study the caller may see that changes."""
            if not self.nats_url:
                raise ApiError(503, "UNAVAILABLE", "EVENTS_UNAVAILABLE",
                               "live updates need the bus (SIDECAR_NATS_URL)")
            try:
                await self._ensure_started()
            except Exception:
                log.warning("event stream: cannot reach the bus", exc_info=True)
                raise ApiError(503, "UNAVAILABLE", "EVENTS_UNAVAILABLE",
                               "live updates are unavailable; try again shortly") from None
            return StreamingResponse(self.stream(request, me), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store",
                                              "X-Accel-Buffering": "no"})

        return router
