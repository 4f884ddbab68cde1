"""The authenticated bus on a real nats-server configured as `sidecar up` configures it
(sidecar_app.runtime.embedded.start_nats): no anonymous client, no client without a mesh
certificate, and each process's user publishes only its own subjects."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from sidecar_app.runtime.embedded import start_nats, stop_process
from sidecar_core.db import Database
from sidecar_core.messaging import outbox
from sidecar_core.messaging.bus import Bus
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.outbox import OutboxRelay
from sidecar_core.messaging.subjects import AI_RUN_FINISHED, Topology
from sidecar_core.store.models import OutboxMessage
from tests import pki as test_pki
from tests.servers import free_port


@dataclass
class Embedded:
    url: str
    data_dir: Path
    topology: Topology

    def auth(self, user: str) -> NatsAuth:
        return NatsAuth.of(self.data_dir, user)

    async def connect(self, user: str, **options: Any) -> Client:
        return await nats.connect(self.url, **{**self.auth(user).connect_options(),
                                               **_no_retry(), **options})

    async def in_stream(self, subject: str) -> int:
        """Messages on `subject` in the events stream (read as the operator)."""
        nc = await self.connect("operator")
        try:
            info = await nc.jetstream().stream_info(self.topology.events_stream,
                                                    subjects_filter=subject)
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()


def _no_retry() -> dict[str, Any]:
    return {"allow_reconnect": False, "max_reconnect_attempts": 0, "connect_timeout": 3}


@pytest.fixture()
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    """The product's embedded nats-server on a free loopback port, with the tests' mesh CA."""
    test_pki.install(tmp_path)
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix, prefix.upper())
    port = free_port()
    proc = start_nats(tmp_path / "nats", port, tmp_path / "nats.log", tmp_path, topology)
    try:
        yield Embedded(f"nats://127.0.0.1:{port}", tmp_path, topology)
    finally:
        stop_process(proc)


@pytest.fixture()
async def declared(embedded: Embedded) -> AsyncIterator[Embedded]:
    """The topology's streams, declared by the workflow's user as at start-up."""
    bus = await Bus.connect(embedded.url, embedded.topology, auth=embedded.auth("workflow"))
    await bus.close()
    yield embedded


def test_the_embedded_config_is_private_and_has_no_anonymous_user(embedded: Embedded) -> None:
    config = embedded.data_dir / "nats-auth" / "nats.conf"
    text = config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    assert (embedded.data_dir / "nats-auth").stat().st_mode & 0o777 == 0o700
    assert "no_auth_user" not in text and "verify: true" in text
    seed = embedded.data_dir / "nats-auth" / "ingest.nk"
    assert seed.stat().st_mode & 0o777 == 0o600
    assert seed.read_text().strip() not in text  # only public keys in the server's config


async def test_a_client_without_credentials_is_refused(embedded: Embedded) -> None:
    options = embedded.auth("ingest").connect_options()
    del options["nkeys_seed_str"]  # the mesh certificate, but no nkey
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(embedded.url, **options, **_no_retry())
    nc = await embedded.connect("ingest")  # the same with its nkey: accepted
    assert nc.is_connected
    await nc.close()


async def test_a_client_without_a_mesh_certificate_is_refused(embedded: Embedded) -> None:
    auth = embedded.auth("ingest")
    options = auth.connect_options()
    assert auth.ca is not None
    options["tls"] = ssl.create_default_context(cafile=str(auth.ca))  # trusts, presents none
    with pytest.raises(Exception):  # noqa: B017 (TLS alert or closed connection)
        await nats.connect(embedded.url, **options, **_no_retry())
    # a certificate of another CA is refused as well
    other = ssl.create_default_context(cafile=str(auth.ca))
    foreign = test_pki.folder().parent / "foreign"
    if not (foreign / "ingest.crt").exists():
        from sidecar_core.security.pki import ensure_mesh

        ensure_mesh(foreign)
    other.load_cert_chain(str(foreign / "ingest.crt"), str(foreign / "ingest.key"))
    with pytest.raises(Exception):  # noqa: B017
        await nats.connect(embedded.url, **{**options, "tls": other}, **_no_retry())


async def test_the_ingest_user_cannot_publish_an_ai_result(declared: Embedded) -> None:
    subject = declared.topology.subject(AI_RUN_FINISHED)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await declared.connect("ingest", error_cb=on_error)
    try:
        await nc.publish(subject, b"forged")
        await nc.flush()
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        with pytest.raises(nats.errors.TimeoutError):  # JetStream never acknowledges it
            await nc.jetstream().publish(subject, b"forged", timeout=1.0)
    finally:
        await nc.close()
    assert await declared.in_stream(subject) == 0


async def test_the_normalizer_user_publishes_an_ai_result(declared: Embedded) -> None:
    subject = declared.topology.subject(AI_RUN_FINISHED)
    nc = await declared.connect("normalizer")
    try:
        ack = await nc.jetstream().publish(subject, b"result", timeout=5.0)
        assert ack.stream == declared.topology.events_stream
    finally:
        await nc.close()
    assert await declared.in_stream(subject) == 1


async def test_the_ingest_relay_leaves_an_ai_result_to_the_normalizers(
        declared: Embedded, db: Database) -> None:
    t = declared.topology
    result, audit = t.subject(AI_RUN_FINISHED), t.audit_subject("study.received")
    async with db.unit_of_work() as s:
        await outbox.enqueue_raw(s, result, f"r-{uuid.uuid4()}", b"result")
        await outbox.enqueue_raw(s, audit, f"a-{uuid.uuid4()}", b"audit")
    ingest = await Bus.connect(declared.url, t, auth=declared.auth("ingest"))
    normalizer = await Bus.connect(declared.url, t, auth=declared.auth("normalizer"))
    try:
        assert await OutboxRelay.of_user(db, ingest, "ingest").relay_once() == 1
        assert await _unpublished(db) == [result]
        assert await declared.in_stream(result) == 0
        # what an unfiltered ingest relay would do: refused, never acknowledged
        with pytest.raises(nats.errors.TimeoutError):
            await ingest.js.publish(result, b"result", timeout=1.0)
        assert await OutboxRelay.of_user(db, normalizer, "normalizer").relay_once() == 1
        assert await _unpublished(db) == []
        assert await declared.in_stream(result) == 1
    finally:
        await ingest.close()
        await normalizer.close()


async def _unpublished(db: Database) -> list[str]:
    from sqlalchemy import select

    async with db.unit_of_work() as s:
        rows = await s.execute(select(OutboxMessage.subject)
                               .where(OutboxMessage.published_at.is_(None)))
        return [r[0] for r in rows]
