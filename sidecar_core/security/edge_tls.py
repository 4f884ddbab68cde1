"""HTTPS at the edge (the review gateway and the OHIF viewer, issue 20): TLS 1.2 or later with
the BCP 195 (RFC 9325) cipher profile, HSTS, the proxies whose forwarded headers are believed,
and no plain HTTP on a non-loopback address unless asked for.

Not the mesh's mTLS (sidecar_core.security.mesh_tls): SIDECAR_TLS_CERT/KEY/CA already name each
process's mesh certificate, so the edge's certificate is SIDECAR_HTTPS_CERT/SIDECAR_HTTPS_KEY.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from sidecar_core.settings import CommonSettings

# BCP 195 / RFC 9325 §4.2: TLS 1.2 suites with forward secrecy and an AEAD cipher only (TLS 1.3's
# suites are all AEAD and not affected by this string).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
HSTS = "max-age=31536000"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class EdgeConfigError(ValueError):
    """An edge (HTTPS) setting that keeps the server from starting; its text is one line."""


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_proxies(text: str) -> list[str]:
    """The addresses and networks (CIDR) of a comma-separated list; EdgeConfigError on others."""
    proxies = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            if "/" in item:
                ipaddress.ip_network(item)
            else:
                ipaddress.ip_address(item)
        except ValueError as exc:
            raise EdgeConfigError(f"trusted proxy {item!r} is not an IP address or network "
                                  f"(CIDR, host bits zero): {exc}") from None
        proxies.append(item)
    return proxies


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def server_context(cert: Path, key: Path, client_ca: Path | None = None, *,
                   client_cert_required: bool = True, what: str = "HTTPS",
                   error: type[ValueError] = EdgeConfigError) -> ssl.SSLContext:
    """The server's TLS context of every edge (HTTPS, DICOM TLS, MLLP over TLS): TLS 1.2+, BCP
    195 ciphers, no compression or renegotiation. With `client_ca`, client certificates are asked
    for and verified against it: required, or (`client_cert_required=False`) verified when
    presented. A file that does not load is `error` naming `what` and the file, in one line."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                    | ssl.OP_CIPHER_SERVER_PREFERENCE)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise error(f"cannot load the {what} certificate {cert} with key {key}: "
                    f"{_one_line(exc)}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise error(f"cannot load the {what} client CA {client_ca}: "
                        f"{_one_line(exc)}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_cert_required else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                   *, what: str = "TLS", error: type[ValueError] = EdgeConfigError
                   ) -> ssl.SSLContext:
    """A client context for a peer's TLS port (a PACS's DICOM TLS, an audit repository's syslog):
    TLS 1.2+, BCP 195 ciphers, the peer's certificate verified against `ca` (default: the system
    store) and its name against the host connected to; `cert`/`key` presented as the client
    certificate when given."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise error(f"cannot load the {what} CA {ca}: {_one_line(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise error(f"cannot load the {what} client certificate {cert} with key {key}: "
                        f"{_one_line(exc)}") from None
    return ctx


def pinned_client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the certificates in `cert` (the server's own, or
    its chain): for a supervisor's loopback health check, where the name is not the one the
    certificate was issued for. The chain is verified; the host name is not."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


def plain_http_refusal(host: str, port: int, https: bool, insecure_http: bool,
                       what: str = "server") -> str | None:
    """Why a server may not listen on `host` (one line), or None when it may."""
    if https or insecure_http or is_loopback(host):
        return None
    return (f"refusing to serve the {what} over plain HTTP on {host}:{port}, which is not a "
            "loopback address: give it an HTTPS certificate (SIDECAR_HTTPS_CERT and "
            "SIDECAR_HTTPS_KEY, or `sidecar up --tls-cert FILE --tls-key FILE`), or allow plain "
            "HTTP behind a TLS-terminating proxy with SIDECAR_INSECURE_HTTP=1 (`--insecure-http`)")


class EdgeSettings(CommonSettings):
    """The HTTPS settings of a process serving browsers (the gateway, the viewer)."""

    https_cert: Path | None = Field(
        default=None, description="HTTPS certificate (PEM, the chain after the leaf) served to "
        "browsers (SIDECAR_HTTPS_CERT); unset: plain HTTP. Not the mesh's SIDECAR_TLS_CERT")
    https_key: Path | None = Field(default=None, description="The key of https_cert (PEM)")
    insecure_http: bool = Field(
        default=False, description="Allow plain HTTP on a non-loopback address (behind a "
        "TLS-terminating proxy)")
    trusted_proxies: str = Field(
        default="", description="Comma-separated addresses or networks (CIDR) of the proxies "
        "whose X-Forwarded-For and X-Forwarded-Proto are believed; empty: none")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        parse_proxies(value)
        return value

    @model_validator(mode="after")
    def _cert_and_key(self) -> EdgeSettings:
        if (self.https_cert is None) != (self.https_key is None):
            raise EdgeConfigError("SIDECAR_HTTPS_CERT and SIDECAR_HTTPS_KEY go together: "
                                  "give both or neither")
        return self

    @property
    def https(self) -> bool:
        return self.https_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"

    def refusal(self, host: str, port: int, what: str) -> str | None:
        return plain_http_refusal(host, port, self.https, self.insecure_http, what)

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config keywords: the TLS context when https, and forwarded headers believed
        only from the trusted proxies (ignored altogether without any)."""
        proxies = parse_proxies(self.trusted_proxies)
        options: dict[str, Any] = {"proxy_headers": bool(proxies),
                                   "forwarded_allow_ips": proxies or None}
        if self.https_cert is not None and self.https_key is not None:
            context = server_context(self.https_cert, self.https_key)

            def factory(_config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
                return context

            options.update(ssl_certfile=str(self.https_cert), ssl_keyfile=str(self.https_key),
                           ssl_context_factory=factory)
        return options


class HstsMiddleware:
    """ASGI middleware: Strict-Transport-Security on every HTTPS response (the scheme as the
    connection or a trusted proxy says)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"strict-transport-security" for name, _ in headers):
                    headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)
