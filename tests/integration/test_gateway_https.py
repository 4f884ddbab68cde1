"""The review gateway at the edge (issue 20): HTTPS with TLS 1.2+ only, HSTS and Secure cookies,
and forwarded headers believed from trusted proxies alone."""

from __future__ import annotations

import asyncio
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from review_gateway.main import run
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.security.edge_tls import HSTS, EdgeConfigError
from sidecar_core.store.models import LoginAttempt
from tests import pki as test_pki
from tests.integration.test_gateway_api import SECRET, Gateway, gateway  # noqa: F401 (fixture)
from tests.integration.test_workflow_queries import PASSWORD
from tests.servers import free_port

pytestmark = pytest.mark.integration
CLIENT = "203.0.113.7"  # the browser behind the proxy (TEST-NET-3)


@asynccontextmanager
async def serving(gw: Gateway, tmp_path: Path, **edge: Any) -> AsyncIterator[int]:
    port = free_port()
    settings = GatewaySettings(data_dir=tmp_path, token_secret=SECRET, gateway_port=port,
                               workflow_address=f"127.0.0.1:{gw.server.port}",
                               ingest_address=f"127.0.0.1:{gw.server.port}",
                               log_level="WARNING", **edge)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(settings, stop, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def login(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    reply = await http.post("/api/v1/auth/login", headers=headers,
                            json={"username": "rad-a", "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    return reply


def cookies_secure(reply: httpx.Response) -> list[bool]:
    cookies = reply.headers.get_list("set-cookie")
    assert len(cookies) == 2
    return ["; secure" in c.lower() for c in cookies]


async def last_address(db: Database) -> str:
    async with db.read() as s:
        return str(await s.scalar(select(LoginAttempt.address)
                                  .order_by(LoginAttempt.at.desc()).limit(1)))


def handshake(port: int, ctx: ssl.SSLContext) -> tuple[str | None, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.version(), tls.cipher()


async def test_https_tls12_plus_hsts_and_secure_cookies(
        gateway: Gateway, db: Database, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    ca, cert, key = test_pki.web_certificate(tmp_path, "Test edge CA")
    async with serving(gateway, tmp_path, https_cert=cert, https_key=key) as port:
        trust = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=trust) as http:
            health = await http.get("/healthz")
            assert health.status_code == 200
            assert health.headers["strict-transport-security"] == HSTS
            reply = await login(http, **{"X-Forwarded-For": CLIENT})
            assert cookies_secure(reply) == [True, True]
        # No proxy is trusted: the forwarded address is not believed.
        assert await last_address(db) == "127.0.0.1"

        # Verified against the CA that issued it, by name too.
        tls12 = ssl.create_default_context(cafile=str(ca))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        version, cipher = await asyncio.to_thread(handshake, port, tls12)
        assert version == "TLSv1.2" and ("GCM" in cipher[0] or "CHACHA20" in cipher[0])
        assert cipher[0].startswith("ECDHE")
        # A TLS 1.2 client offering only non-AEAD suites gets no connection.
        cbc = ssl.create_default_context(cafile=str(ca))
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("AES128-SHA:AES256-SHA:ECDHE-ECDSA-AES128-SHA")
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, port, cbc)
        # A TLS 1.1 client (its OpenSSL lowered to offer it; it completes a TLS 1.1 handshake
        # with a server allowing one) gets no handshake: the server hangs up on its hello
        # (asyncio's TLS drops the protocol_version alert).
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cafile=str(ca))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNEXPECTED_EOF"):
            await asyncio.to_thread(handshake, port, old)
        # Plain HTTP to the TLS port gets no HTTP answer.
        with pytest.raises(httpx.TransportError):
            async with httpx.AsyncClient() as plain:
                await plain.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        # A client that does not trust the certificate is turned away by its own check.
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as untrusting:
                await untrusting.get(f"https://127.0.0.1:{port}/healthz", timeout=5)


async def test_trusted_proxy_gives_the_client_address_and_scheme(
        gateway: Gateway, db: Database, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    forwarded = {"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"}
    # The proxy (this test, on 127.0.0.1) is trusted: the login is the browser's, over https.
    async with serving(gateway, tmp_path, trusted_proxies="10.9.0.0/16,127.0.0.1") as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        reply = await login(http, **forwarded)
        assert cookies_secure(reply) == [True, True]
        assert reply.headers["strict-transport-security"] == HSTS
        assert await last_address(db) == CLIENT
    # Another proxy is trusted, not this one: its headers are ignored.
    async with serving(gateway, tmp_path, trusted_proxies="10.9.9.9") as port, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        reply = await login(http, **forwarded)
        assert cookies_secure(reply) == [False, False]
        assert "strict-transport-security" not in reply.headers
        assert await last_address(db) == "127.0.0.1"


async def test_plain_http_off_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    settings = GatewaySettings(data_dir=tmp_path, gateway_host="0.0.0.0", gateway_port=0)
    with pytest.raises(EdgeConfigError, match="--insecure-http"):
        await run(settings, asyncio.Event())
