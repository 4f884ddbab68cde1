"""Live updates: bus audit events reach each caller's event stream, scoped by facility."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from review_gateway.main import run
from sidecar_core.db import Database
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.outbox import OutboxRelay
from tests.integration.review_env import TOPOLOGY, review_env
from tests.servers import NatsServer, free_port

pytestmark = pytest.mark.integration


async def _listen(http: httpx.AsyncClient, token: str, into: list[dict[str, Any]],
                  connected: asyncio.Event, changed: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.stream("GET", "/api/v1/events", headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        event = ""
        async for line in reply.aiter_lines():
            if line == ": connected":
                connected.set()
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "study":
                into.append(json.loads(line.removeprefix("data: ")))
                changed.set()


async def _until(condition: Any, changed: asyncio.Event, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            changed.clear()
            if condition():
                return
            await changed.wait()


async def test_event_stream_is_driven_by_the_bus_and_scoped(db: Database, nats: NatsServer,
                                                            tmp_path: Path) -> None:
    async with review_env(db, tmp_path, nats_url=nats.url) as env:
        bus = await Bus.connect(nats.url, TOPOLOGY, auth=nats.auth())
        stop = asyncio.Event()
        relay = asyncio.create_task(OutboxRelay(db, bus, poll_s=0.2).run(stop))
        port = free_port()
        settings = env.settings.model_copy(update={"gateway_port": port,
                                                   "log_level": "WARNING"})
        started = asyncio.Event()
        gateway = asyncio.create_task(run(settings, stop, started=started))
        await asyncio.wait_for(started.wait(), 15)
        seen: dict[str, list[dict[str, Any]]] = {"rad-a": [], "rad-b": [], "auditor": []}
        listeners = []
        changed = asyncio.Event()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         timeout=30) as http:
                for user, into in seen.items():
                    token = (await env.login(user))["access_token"]
                    connected = asyncio.Event()
                    listeners.append(asyncio.create_task(_listen(http, token, into, connected,
                                                                 changed)))
                    await asyncio.wait_for(connected.wait(), 15)
                admin = await env.bearer("admin")
                study_a, study_b = str(env.seeded.study), str(env.seeded.study_b)
                assert (await env.http.post(f"/api/v1/studies/{study_a}/claim",
                                            headers=admin)).status_code == 200
                assert (await env.http.post(f"/api/v1/studies/{study_b}/claim",
                                            headers=admin)).status_code == 200
                await _until(lambda: any(e["id"] == study_b for e in seen["rad-b"]), changed)
                await _until(lambda: {study_a, study_b} <= {e["id"] for e in seen["auditor"]},
                             changed)
                await _until(lambda: any(e["id"] == study_a for e in seen["rad-a"]), changed)
                # The bus delivers in order: study A's update reached every stream before B's.
                assert {e["id"] for e in seen["rad-a"]} == {study_a}
                assert {e["id"] for e in seen["rad-b"]} == {study_b}
                update = next(e for e in seen["rad-a"] if e["assigned_to"] == "admin")
                assert set(update) == {"id", "state", "ai_status", "finding_count",
                                       "max_confidence", "assigned_to"}
                assert (update["state"], update["finding_count"]) == ("assigned", 2)
        finally:
            for task in listeners:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            stop.set()
            await asyncio.wait_for(gateway, 20)
            await relay
            await bus.close()


async def test_event_stream_without_a_bus_says_unavailable(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        headers = await env.bearer("rad-a")
        env.http.cookies.clear()
        reply = await env.http.get("/api/v1/events", headers=headers)
        assert reply.status_code == 503
        assert reply.json()["error"]["reason"] == "EVENTS_UNAVAILABLE"
        assert (await env.http.get("/api/v1/events")).status_code == 401


async def test_event_stream_ends_after_logout(db: Database, nats: NatsServer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from review_gateway.review import events

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.2)
    async with review_env(db, tmp_path, nats_url=nats.url) as env:
        stop = asyncio.Event()
        port = free_port()
        settings = env.settings.model_copy(update={"gateway_port": port,
                                                   "log_level": "WARNING"})
        started = asyncio.Event()
        gateway = asyncio.create_task(run(settings, stop, started=started))
        await asyncio.wait_for(started.wait(), 15)
        try:
            login = await env.login("rad-a")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                         timeout=30) as http:
                connected, changed = asyncio.Event(), asyncio.Event()
                listener = asyncio.create_task(_listen(http, login["access_token"], [],
                                                       connected, changed))
                await asyncio.wait_for(connected.wait(), 15)
                out = await http.post("/api/v1/auth/logout", headers={
                    "Authorization": f"Bearer {login['access_token']}"})
                assert out.status_code == 204
                await asyncio.wait_for(listener, 15)  # the server ended the stream
        finally:
            stop.set()
            await asyncio.wait_for(gateway, 20)
