"""DICOM TLS (PS3.15 Annex B, the BCP 195 secure transport connection profile, issue 20): the
SCP's TLS context (the HTTPS edge's profile, optionally asking for a client certificate), the
export SCU's client context, and the peer-address lists of a facility's DICOM senders.

The certificate is SIDECAR_DICOM_TLS_CERT/_KEY, or else the edge's SIDECAR_HTTPS_CERT/_KEY (what
`sidecar up --tls-cert/--tls-key` gives every process); SIDECAR_DICOM_TLS_CLIENT_CA makes the
SCP's TLS port ask for a client certificate (optional at the TLS layer: a facility decides with
`dicom_require_client_cert`); SIDECAR_PACS_TLS_CA is what the export trusts (default: the
system store).
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from pydantic import Field, model_validator

from sidecar_core.security.edge_tls import client_context, server_context
from sidecar_core.settings import CommonSettings

DICOM_TLS_PORT = 2762  # IANA "dicom-tls", PS3.15 Annex B
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DicomTlsError(ValueError):
    """A DICOM TLS setting that keeps a listener or an export from working (one line)."""


def parse_allowed_hosts(text: str | None) -> tuple[IPNetwork, ...]:
    """The networks of a comma-separated list of addresses and CIDR networks ('' = any host);
    ValueError naming the first bad item."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or a network in CIDR notation "
                             f"with its host bits zero ({exc})") from None
    return tuple(networks)


def normalized_hosts(text: str | None) -> str | None:
    """The canonical form of an allowed-hosts list (None for '' = any host)."""
    networks = parse_allowed_hosts(text)
    return ",".join(dict.fromkeys(str(n) for n in networks)) or None


def host_allowed(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """True when `networks` is empty (any host) or holds `address`; an IPv4-mapped IPv6 peer
    counts as its IPv4 address."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def scp_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The SCP's context: the edge's profile; with `client_ca`, a client certificate is asked
    for and verified against it when presented (a connection without one still handshakes: a
    facility decides whether it needs one)."""
    return server_context(cert, key, client_ca, client_cert_required=False, what="DICOM TLS",
                          error=DicomTlsError)


def scu_context(ca: Path | None = None, cert: Path | None = None,
                key: Path | None = None) -> ssl.SSLContext:
    """A client context for a PACS's DICOM TLS port (edge_tls.client_context): its certificate
    verified against `ca` (default: the system store) and the host connected to; `cert`/`key`
    presented as the client certificate when given."""
    return client_context(ca, cert if key is not None else None, key, what="PACS TLS",
                          error=DicomTlsError)


class DicomTlsSettings(CommonSettings):
    """The DICOM TLS settings of a process that speaks DIMSE (the ingest SCP, the export SCU)."""

    dicom_tls_port: int = Field(
        default=DICOM_TLS_PORT, ge=0, le=65535,
        description="DICOM TLS port of the SCP (PS3.15 Annex B); listens only with a "
        "certificate; 0 = off")
    dicom_tls_cert: Path | None = Field(
        default=None, description="DICOM TLS certificate (PEM, chain after the leaf); default "
        "SIDECAR_HTTPS_CERT")
    dicom_tls_key: Path | None = Field(default=None, description="Its key (PEM); default "
                                       "SIDECAR_HTTPS_KEY")
    dicom_tls_client_ca: Path | None = Field(
        default=None, description="CA bundle (PEM) of the senders' client certificates: the "
        "TLS port asks for one; facilities with dicom_require_client_cert refuse senders "
        "without a verified one")
    pacs_tls_ca: Path | None = Field(
        default=None, description="CA bundle (PEM) the export trusts for a PACS's DICOM TLS "
        "certificate; default the system store")
    https_cert: Path | None = Field(default=None, description="The edge's certificate "
                                    "(SIDECAR_HTTPS_CERT), the DICOM TLS default")
    https_key: Path | None = Field(default=None, description="Its key (SIDECAR_HTTPS_KEY)")

    @model_validator(mode="after")
    def _pairs(self) -> DicomTlsSettings:
        if (self.dicom_tls_cert is None) != (self.dicom_tls_key is None):
            raise DicomTlsError("SIDECAR_DICOM_TLS_CERT and SIDECAR_DICOM_TLS_KEY go together: "
                                "give both or neither")
        return self

    def certificate(self) -> tuple[Path, Path] | None:
        """(certificate, key) of DICOM TLS: its own, else the edge's, else None (no TLS)."""
        if self.dicom_tls_cert is not None and self.dicom_tls_key is not None:
            return self.dicom_tls_cert, self.dicom_tls_key
        if self.https_cert is not None and self.https_key is not None:
            return self.https_cert, self.https_key
        return None

    def scp_context(self) -> ssl.SSLContext | None:
        """The TLS port's context, or None when no certificate is configured."""
        pair = self.certificate()
        return scp_context(*pair, self.dicom_tls_client_ca) if pair else None

    def scu_context(self) -> ssl.SSLContext:
        """The export's context: SIDECAR_PACS_TLS_CA (or the system store), presenting the
        DICOM TLS certificate as the client certificate where one is configured."""
        pair = self.certificate()
        return scu_context(self.pacs_tls_ca, *(pair or (None, None)))
