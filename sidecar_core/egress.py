"""Outbound destinations: one policy for every call the product makes out of the hospital's
sidecar (the handoff webhook, the LLM, the export PACS).

- A destination must be `https` (DICOM: TLS) unless the operator lists it in
  `SIDECAR_EGRESS_ALLOW` (comma-separated `host`, `host:port`, IP, `[v6]:port` or CIDR).
- Loopback, link-local (169.254/16, fe80::/10), cloud metadata, unspecified, multicast and
  reserved addresses are refused unless listed, checked on every address the name resolves to.
- The caller connects to an address that was checked (`pinned_transport`), never resolves the
  name again: no DNS-rebinding window; the Host header and the TLS SNI keep the name.

The same check runs when an operator saves a setting (`sidecar facility set`, the admin API)
and when a job calls out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

REFUSED_EVENT = "security.egress_refused"

# Instance metadata services (AWS/GCP/Azure/OpenStack 169.254.169.254, AWS ECS 169.254.170.2,
# AWS IPv6 fd00:ec2::254, Alibaba 100.100.100.200, Oracle 192.0.0.192).
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))


class EgressRefused(Exception):
    """A destination the policy refuses. `reason` is UPPER_SNAKE (EGRESS_NOT_HTTPS,
    EGRESS_ADDRESS_REFUSED, EGRESS_UNRESOLVED, EGRESS_INVALID_URL)."""

    def __init__(self, reason: str, message: str, destination: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.destination = destination

    @property
    def security_event(self) -> bool:
        """False for a name that does not resolve (an outage, not an attempt)."""
        return self.reason != "EGRESS_UNRESOLVED"


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: an IPv4 address inside IPv6
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def address_class(ip: IpAddress) -> str | None:
    """Why an address is refused unless listed (a word), or None for an ordinary one. An IPv4
    address carried in IPv6 (mapped, NAT64, 6to4) is judged as itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_class(ip.ipv4_mapped)
        if ip in NAT64:
            return address_class(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            return address_class(ip.sixtofour)
    if ip in METADATA:
        return "cloud metadata"
    if ip.is_unspecified or ip in THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved or (isinstance(ip, ipaddress.IPv4Address)
                          and ip == ipaddress.IPv4Address("255.255.255.255")):
        return "reserved"
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One item of SIDECAR_EGRESS_ALLOW: a host name, an address or a network, and an optional
    port (names and addresses only)."""

    host: str = ""  # a lower-cased name, or ""
    network: IpNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        item = text.strip()
        if not item:
            raise ValueError("an empty entry")
        if "/" in item:
            try:
                return cls(network=ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not a CIDR network") from None
        host, port = item, None
        if item.startswith("["):
            inner, _, rest = item[1:].partition("]")
            host = inner
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"{item!r}: [IPv6]:PORT expected")
                port = int(rest[1:])
        elif item.count(":") == 1:
            host, _, digits = item.partition(":")
            if not digits.isdigit():
                raise ValueError(f"{item!r}: HOST:PORT expected")
            port = int(digits)
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"{item!r}: a port is 1 to 65535")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            if not host or any(c in host for c in "/@?# "):
                raise ValueError(f"{item!r} is not a host name") from None
            return cls(host=host.lower().rstrip("."), port=port)
        return cls(network=ipaddress.ip_network(ip), port=port)

    def names(self, host: str, port: int) -> bool:
        return bool(self.host) and self.host == host and self.port in (None, port)

    def covers(self, ip: IpAddress, port: int) -> bool:
        if self.network is None or self.port not in (None, port):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.version == self.network.version and ip in self.network


@dataclass(frozen=True)
class Destination:
    """A checked destination: connect to one of `addresses` (and to nothing else)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    listed: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the name resolves to (A and AAAA), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


class EgressPolicy:
    """The rules for outbound destinations; `allow` is SIDECAR_EGRESS_ALLOW parsed."""

    def __init__(self, allow: Iterable[AllowEntry] = (), resolver: Resolver | None = None
                 ) -> None:
        self.allow = tuple(allow)
        self.resolver = resolver or system_resolver

    @classmethod
    def parse(cls, text: str, resolver: Resolver | None = None) -> EgressPolicy:
        """From `host[:port]`, IP or CIDR items separated by commas; ValueError names a bad
        item."""
        return cls([AllowEntry.parse(x) for x in text.split(",") if x.strip()], resolver)

    def describe(self) -> str:
        return ",".join(str(e.network) if e.network else
                        e.host + (f":{e.port}" if e.port else "") for e in self.allow) or "-"

    async def check_url(self, url: str) -> Destination:
        """An http(s) destination (webhook, LLM): https unless listed; EgressRefused else."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise EgressRefused("EGRESS_INVALID_URL", "not a valid URL", _safe(url)) from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme not in ("http", "https") or not host:
            raise EgressRefused("EGRESS_INVALID_URL", "an http:// or https:// URL with a host",
                                _safe(url))
        return await self.check(scheme, host, port or (443 if scheme == "https" else 80),
                                secure=scheme == "https")

    async def check_dicom(self, host: str, port: int, tls: bool) -> Destination:
        """A DICOM peer: over TLS unless listed, on an ordinary address unless listed."""
        return await self.check("dicom-tls" if tls else "dicom", host.rstrip("."), port,
                                secure=tls)

    async def check(self, scheme: str, host: str, port: int, secure: bool) -> Destination:
        name = host.lower()
        shown = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
        try:
            addresses = await self.resolver(name, port)
        except (OSError, UnicodeError) as exc:
            raise EgressRefused("EGRESS_UNRESOLVED", f"{host} does not resolve ({exc})",
                                shown) from None
        if not addresses:
            raise EgressRefused("EGRESS_UNRESOLVED", f"{host} does not resolve", shown)
        return self.decide(scheme, name, port, addresses, secure, shown)

    def decide(self, scheme: str, host: str, port: int, addresses: Sequence[str],
               secure: bool, shown: str = "") -> Destination:
        """The rule itself on resolved addresses (no I/O)."""
        shown = shown or f"{scheme}://{host}:{port}"
        ips = [ipaddress.ip_address(a) for a in addresses]
        by_name = any(e.names(host, port) for e in self.allow)
        listed = by_name or all(any(e.covers(ip, port) for e in self.allow) for ip in ips)
        if not listed:
            for ip in ips:
                why = address_class(ip)
                if why is not None and not any(e.covers(ip, port) for e in self.allow):
                    where = "" if str(ip) == host else f" ({host} resolves to {ip})"
                    raise EgressRefused(
                        "EGRESS_ADDRESS_REFUSED",
                        f"{shown}: a {why} address{where} is refused unless listed in "
                        "SIDECAR_EGRESS_ALLOW", shown)
            if not secure:
                what = "https" if scheme.startswith("http") else "DICOM TLS"
                raise EgressRefused(
                    "EGRESS_NOT_HTTPS" if scheme.startswith("http") else "EGRESS_NOT_TLS",
                    f"{shown}: {what} is required unless the destination is listed in "
                    "SIDECAR_EGRESS_ALLOW", shown)
        return Destination(scheme, host, port, tuple(str(ip) for ip in ips), listed)


def _safe(url: str) -> str:
    """A URL as shown in an error: no credentials, no query."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{netloc}{parts.path}"[:200]
    except ValueError:
        return "(unparsable URL)"


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the checked addresses of one destination and refuses any other host (a
    redirect elsewhere, a proxy)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int,  # httpcore's interface
                          timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        d = self.destination
        if host.lower().rstrip(".") != d.host or port != d.port:
            raise EgressRefused("EGRESS_ADDRESS_REFUSED",
                                f"{host}:{port} is not the checked destination {d}", str(d))
        last: Exception | None = None
        for address in d.addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address,
                                                    socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("EGRESS_ADDRESS_REFUSED", "no unix sockets", path)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go to a checked destination's addresses only; the
    URL keeps the name (Host header, TLS SNI and certificate check)."""

    def __init__(self, destination: Destination, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        context = verify if isinstance(verify, ssl.SSLContext) else None
        if context is None:
            context = httpx.create_ssl_context(verify=verify)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=10, max_keepalive_connections=5,
            keepalive_expiry=5.0, network_backend=_PinnedBackend(destination))


def pinned_client(destination: Destination, timeout_s: float,
                  verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """An httpx client bound to one checked destination: no redirects, no proxies from the
    environment, connections to the checked addresses only."""
    return httpx.AsyncClient(transport=PinnedTransport(destination, verify), timeout=timeout_s,
                             follow_redirects=False, trust_env=False)
