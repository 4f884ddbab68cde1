"""HTTPS at the edge: the settings, the TLS context, the plain-HTTP refusal, HSTS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sidecar_core.security import pki
from sidecar_core.security.edge_tls import (
    HSTS,
    EdgeConfigError,
    EdgeSettings,
    HstsMiddleware,
    is_loopback,
    parse_proxies,
    pinned_client_context,
    plain_http_refusal,
    server_context,
)
from sidecar_core.security.identity import Identity


def write_cert(folder: Path) -> tuple[Path, Path]:
    issued = pki.Authority.create().issue(Identity("service", "gateway"),
                                          hosts=("127.0.0.1", "localhost"))
    cert, key = folder / "https.crt", folder / "https.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    return cert, key


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost",
                                  "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "sidecar.example.org", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_plain_http_is_refused_off_loopback_unless_allowed() -> None:
    refusal = plain_http_refusal("0.0.0.0", 8080, https=False, insecure_http=False,
                                 what="review gateway")
    assert refusal is not None and "\n" not in refusal
    assert "0.0.0.0:8080" in refusal and "--insecure-http" in refusal
    assert plain_http_refusal("0.0.0.0", 8080, https=True, insecure_http=False) is None
    assert plain_http_refusal("0.0.0.0", 8080, https=False, insecure_http=True) is None
    assert plain_http_refusal("127.0.0.1", 8080, https=False, insecure_http=False) is None


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert parse_proxies(" 10.0.0.5, 192.168.0.0/16,,::1 ") == ["10.0.0.5", "192.168.0.0/16",
                                                               "::1"]
    assert parse_proxies("") == []
    for bad in ("proxy.local", "10.0.0.1/8", "*"):
        with pytest.raises(EdgeConfigError):
            parse_proxies(bad)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = write_cert(tmp_path)
    monkeypatch.setenv("SIDECAR_HTTPS_CERT", str(cert))
    monkeypatch.setenv("SIDECAR_HTTPS_KEY", str(key))
    monkeypatch.setenv("SIDECAR_TRUSTED_PROXIES", "10.0.0.5,10.1.0.0/16")
    monkeypatch.setenv("SIDECAR_INSECURE_HTTP", "1")
    settings = EdgeSettings()
    assert settings.https and settings.scheme == "https" and settings.insecure_http
    # The mesh's certificate settings are separate.
    assert settings.tls_cert is None
    options = settings.uvicorn_options()
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == ["10.0.0.5", "10.1.0.0/16"]
    context = options["ssl_context_factory"](None, None)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_without_proxies_forwarded_headers_are_ignored(tmp_path: Path) -> None:
    options = EdgeSettings(data_dir=tmp_path).uvicorn_options()
    assert options["proxy_headers"] is False
    assert "ssl_context_factory" not in options


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    cert, _key = write_cert(tmp_path)
    with pytest.raises(ValidationError, match="go together"):
        EdgeSettings(https_cert=cert)


def test_bad_proxies_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TRUSTED_PROXIES", "not-an-address")
    with pytest.raises(ValidationError, match="not an IP address"):
        EdgeSettings()


def test_server_context_is_tls12_plus_with_aead_ciphers(tmp_path: Path) -> None:
    cert, key = write_cert(tmp_path)
    ctx = server_context(cert, key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12)
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_unreadable_certificate_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeConfigError, match="cannot load the HTTPS certificate") as err:
        server_context(tmp_path / "missing.crt", tmp_path / "missing.key")
    assert "\n" not in str(err.value)


def test_pinned_client_context_trusts_the_leaf(tmp_path: Path) -> None:
    cert, _key = write_cert(tmp_path)
    ctx = pinned_client_context(cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN


def _headers_of(scheme: str) -> dict[bytes, bytes]:
    sent: list[dict[str, Any]] = []

    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(HstsMiddleware(app)({"type": "http", "scheme": scheme}, None, send))
    return dict(sent[0]["headers"])


def test_hsts_on_https_responses_only() -> None:
    assert _headers_of("https")[b"strict-transport-security"] == HSTS.encode()
    assert b"strict-transport-security" not in _headers_of("http")
