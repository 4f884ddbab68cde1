"""The HL7 listener's edges on real sockets and a real PostgreSQL: MLLP over TLS (and plaintext
refused there), client certificates, the idle timeout (also for half a frame and an unfinished
handshake), the connection cap and the message size limit."""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import pki
from sidecar_core.security.edge_tls import server_context
from sidecar_core.security.identity import Identity
from sidecar_core.store.models import Facility
from tests import pki as test_pki
from workflow_svc.report_loop.hl7.main import burst_reporter, make_handler, oversize_handler
from workflow_svc.report_loop.hl7.mllp import END, START, MllpLimits, MllpServer

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("hl7bounds", "HL7BOUNDS")
SENDER = "RIS_BOUNDS"


def oru(control_id: str, accession: str = "ACC-B1", note: str = "No acute findings.") -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|{SENDER}|SIDECAR|SIDECAR|20240305113005||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||{accession}^RIS|71250^CT CHEST|||20240305101500|||||||||||||"
        f"RPT-{accession}||20240305113000|||F",
        f"OBX|1|TX|IMP^Impression||{note}||||||F",
    ]) + "\r").encode()


def msa(ack: bytes) -> list[str]:
    body = ack.decode()
    return next(seg for seg in body.split("\r") if seg.startswith("MSA")).split("|")


@pytest.fixture()
async def store(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    async with db.unit_of_work() as s:
        s.add(Facility(id=uuid.uuid4(), name="bounds", hl7_sending_facility=SENDER))
    try:
        yield db
    finally:
        await db.close()


async def rows(db: Database, sql: str) -> list[dict]:
    async with db.read() as s:
        return [dict(r._mapping) for r in (await s.execute(text(sql))).all()]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return test_pki.web_certificate(tmp_path_factory.mktemp("hl7-web"), "RIS link CA")


# listener(limits, tls=True, client_ca=None): an async context manager of a started MllpServer
Listener = Callable[..., Any]


@pytest.fixture()
def listener(store: Database, web: tuple[Path, Path, Path]):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def running(limits: MllpLimits, tls: bool = True, client_ca: Path | None = None,
                      ) -> AsyncIterator[MllpServer]:
        context = server_context(web[1], web[2]) if tls else None
        if context is not None and client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        server = MllpServer(make_handler(store, TOPOLOGY), "127.0.0.1", 0, limits=limits,
                            tls=context, tls_port=0, oversize=oversize_handler(store, TOPOLOGY),
                            on_burst=burst_reporter(store, TOPOLOGY, limits.max_connections),
                            burst_window=0.5)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    return running


async def read_frame(reader: asyncio.StreamReader, timeout: float = 20) -> bytes:
    data = await asyncio.wait_for(reader.readuntil(END), timeout)
    assert data.startswith(START)
    return data[1:-2]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (fails if it did not in `seconds`)."""
    started = time.monotonic()
    try:
        rest = await asyncio.wait_for(reader.read(), seconds)
    except (ConnectionError, ssl.SSLError):
        rest = b""
    assert rest == b"", rest
    return time.monotonic() - started


def trusting(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


async def test_oru_over_tls_is_acked_and_stored_and_plaintext_is_refused(
        listener: Listener, store: Database, web: tuple[Path, Path, Path]) -> None:
    async with listener(MllpLimits()) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tls_port, ssl=trusting(web[0]), server_hostname="localhost")
        tls_object = writer.get_extra_info("ssl_object")
        assert tls_object.version() in ("TLSv1.2", "TLSv1.3")
        writer.write(START + oru("TLS-1") + END)
        assert msa(await read_frame(reader))[1:3] == ["AA", "TLS-1"]
        writer.close()
        # plaintext MLLP on the TLS port: no ACK, the connection is closed, nothing stored
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tls_port)
        writer.write(START + oru("PLAIN-ON-TLS") + END)
        await closed_within(reader, 10)
        writer.close()
        await asyncio.sleep(1.0)  # the burst's window (0.5 s here): one audit event
    stored = await rows(store, "select control_id, status from hl7_messages")
    assert stored == [{"control_id": "TLS-1", "status": "accepted"}]
    [event] = await rows(store, "select error_message, context from audit_events "
                                "where type='hl7.tls_handshake_failed'")
    assert event["context"]["failed"] == 1 and event["context"]["peers"] == ["127.0.0.1"]
    assert "WRONG_VERSION_NUMBER" in event["error_message"].upper(), event


async def test_client_certificate_is_required_when_a_client_ca_is_set(
        listener: Listener, store: Database, web: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ris_ca = pki.Authority.create("RIS client CA")
    issued = ris_ca.issue(Identity("service", "ris"), server=False)
    (tmp_path / "ca.crt").write_bytes(ris_ca.cert_pem)
    (tmp_path / "ris.crt").write_bytes(issued.cert_pem)
    (tmp_path / "ris.key").write_bytes(issued.key_pem)
    async with listener(MllpLimits(), client_ca=tmp_path / "ca.crt") as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tls_port, ssl=trusting(web[0]), server_hostname="localhost")
        writer.write(START + oru("NOCERT-1") + END)  # TLS 1.3: refused after the handshake
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await read_frame(reader)
        writer.close()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tls_port, server_hostname="localhost",
            ssl=trusting(web[0], tmp_path / "ris.crt", tmp_path / "ris.key"))
        writer.write(START + oru("CERT-1") + END)
        assert msa(await read_frame(reader))[1] == "AA"
        writer.close()
        await asyncio.sleep(1.0)
    [event] = await rows(store, "select error_message, context from audit_events "
                                "where type='hl7.tls_handshake_failed'")
    assert event["context"]["failed"] == 1, event
    assert "CERTIFICATE" in event["error_message"].upper(), event
    # the sender's certificate names it in what it sent
    assert await rows(store, "select control_id, peer like '127.0.0.1:% CN=ris' as named "
                             "from hl7_messages") == [{"control_id": "CERT-1", "named": True}]


async def test_idle_half_frame_and_unfinished_handshake_are_closed_after_the_timeout(
        listener: Listener, store: Database) -> None:
    async with listener(MllpLimits(idle_timeout=2.0)) as server:
        idle = await asyncio.open_connection("127.0.0.1", server.port)
        half = await asyncio.open_connection("127.0.0.1", server.port)
        half[1].write(START + oru("HALF-1")[:60])
        handshake = await asyncio.open_connection("127.0.0.1", server.tls_port)
        await asyncio.sleep(0.3)
        assert server.open_connections == 3
        waited = await asyncio.gather(closed_within(idle[0], 8), closed_within(half[0], 8),
                                      closed_within(handshake[0], 8))
        assert all(1.0 < w < 6.0 for w in waited), waited
        assert server.open_connections == 0
        # a connection that keeps talking is not idle: two messages 1.5 s apart on one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for n in (1, 2):
            writer.write(START + oru(f"LIVE-{n}") + END)
            assert msa(await read_frame(reader))[1] == "AA"
            await asyncio.sleep(1.5)
        writer.write(START + oru("LIVE-3") + END)
        assert msa(await read_frame(reader))[1] == "AA"
        writer.close()
        for _, w in (idle, half, handshake):
            w.close()
    assert not await rows(store, "select id from hl7_messages where control_id='HALF-1'")


async def test_connection_cap_evicts_the_longest_idle_then_refuses_with_one_audit_event(
        listener: Listener, store: Database) -> None:
    async with listener(MllpLimits(max_connections=4)) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
        await asyncio.sleep(0.2)
        # a fifth connection takes the place of the one idle longest, and is served
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(START + oru("CAP-1") + END)
        assert msa(await read_frame(reader))[1] == "AA"
        await closed_within(idle[0][0], 5)
        assert server.open_connections == 4
        # every connection busy inside a message: new ones are closed at once, the busy ones go on
        busy = [*idle[1:], (reader, writer)]
        for n, (_, w) in enumerate(busy):
            w.write(START + oru(f"BUSY-{n}")[:50])
        await asyncio.sleep(0.3)
        turned_away = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(30)]
        for r, _ in turned_away:
            await closed_within(r, 5)
        for n, (r, w) in enumerate(busy):
            w.write(oru(f"BUSY-{n}")[50:] + END)
            assert msa(await read_frame(r))[1:3] == ["AA", f"BUSY-{n}"]
        for _, w in [*idle, *turned_away, (reader, writer)]:
            w.close()
        await asyncio.sleep(1.0)  # the burst's window (0.5 s here) ends: one event for all
    events = await rows(store, "select context from audit_events "
                               "where type='hl7.connections_refused'")
    assert len(events) == 1, events
    assert events[0]["context"]["refused"] == 30 and events[0]["context"]["evicted"] == 1
    assert events[0]["context"]["peers"] == ["127.0.0.1"]


async def test_oversized_message_is_answered_ar_without_being_buffered(
        listener: Listener, store: Database) -> None:
    async with listener(MllpLimits(max_message_bytes=4096)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        big = oru("BIG-1", note="x" * 2_000_000)
        writer.write(START)
        for i in range(0, len(big), 65536):  # streamed: the listener reads past it
            writer.write(big[i:i + 65536])
            await writer.drain()
        writer.write(END)
        ack = await read_frame(reader)
        assert msa(ack)[1:3] == ["AR", "BIG-1"]
        assert "SIDECAR_HL7_MAX_MESSAGE_BYTES" in ack.decode()
        # the connection goes on: the next message on it is taken
        writer.write(START + oru("SMALL-1") + END)
        assert msa(await read_frame(reader))[1:3] == ["AA", "SMALL-1"]
        writer.close()
    assert [r["control_id"] for r in await rows(store, "select control_id from hl7_messages")
            ] == ["SMALL-1"]
    [event] = await rows(store, "select context from audit_events "
                                "where type='hl7.message_too_large'")
    assert event["context"]["control_id"] == "BIG-1"
    assert event["context"]["bytes"] >= 2_000_000
