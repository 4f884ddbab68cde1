"""Who a certificate names: a service of the mesh, an operator, or a PACS adapter of one facility.

The identity is a URI subject alternative name in the SPIFFE form, so a hospital's PKI or
cert-manager can issue it too (`uris:` in a cert-manager Certificate):

    spiffe://radiology-sidecar/service/workflow
    spiffe://radiology-sidecar/operator/admin
    spiffe://radiology-sidecar/adapter/<facility>/<adapter name>
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cryptography import x509

TRUST_DOMAIN = "radiology-sidecar"
SCHEME = "spiffe://"
KINDS = ("service", "operator", "adapter")
# The processes of the mesh that hold a certificate of their own (nats: the embedded server).
SERVICES = ("workflow", "ingest", "preprocess", "normalizer", "gateway", "hl7", "nats")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IdentityError(ValueError):
    """A certificate or name that does not make a valid mesh identity."""


def check_name(value: str, what: str = "name") -> str:
    """A name usable in an identity: 1–64 letters, digits, '.', '_' or '-'."""
    if not _NAME.match(value or ""):
        raise IdentityError(f"{what} {value!r} must be 1 to 64 letters, digits, '.', '_' or "
                            "'-', starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Identity:
    """A principal of the mesh, as its certificate names it."""

    kind: str
    name: str
    facility: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise IdentityError(f"unknown identity kind {self.kind!r}")
        check_name(self.name)
        if self.kind == "adapter":
            check_name(self.facility, "facility")
        elif self.facility:
            raise IdentityError("only an adapter is bound to a facility")

    @property
    def uri(self) -> str:
        middle = f"{self.facility}/{self.name}" if self.kind == "adapter" else self.name
        return f"{SCHEME}{TRUST_DOMAIN}/{self.kind}/{middle}"

    @property
    def principal(self) -> str:
        """How the authorization table names it: `service:gateway`, `operator`, `adapter`."""
        return f"service:{self.name}" if self.kind == "service" else self.kind

    def __str__(self) -> str:
        if self.kind == "adapter":
            return f"adapter {self.name} of facility {self.facility}"
        return f"{self.kind} {self.name}"

    @classmethod
    def parse(cls, uri: str) -> Identity:
        prefix = f"{SCHEME}{TRUST_DOMAIN}/"
        if not uri.startswith(prefix):
            raise IdentityError(f"{uri!r} is not an identity of trust domain {TRUST_DOMAIN}")
        parts = uri[len(prefix):].split("/")
        if len(parts) == 2 and parts[0] in ("service", "operator"):
            return cls(parts[0], parts[1])
        if len(parts) == 3 and parts[0] == "adapter":
            return cls("adapter", parts[2], parts[1])
        raise IdentityError(f"{uri!r} names no service, operator or adapter")


def service(name: str) -> Identity:
    return Identity("service", name)


def of_certificate(cert: x509.Certificate) -> Identity:
    """The one identity URI of a certificate; IdentityError when it has none or several."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("the certificate has no subject alternative name") from None
    found = [uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
             if uri.startswith(f"{SCHEME}{TRUST_DOMAIN}/")]
    if len(found) != 1:
        raise IdentityError(f"the certificate names {len(found)} identities of "
                            f"{TRUST_DOMAIN}; exactly one is required")
    return Identity.parse(found[0])


@functools.lru_cache(maxsize=256)
def of_pem(pem: bytes) -> tuple[Identity, str]:
    """(identity, serial number in hex) of a PEM certificate (cached: peers reconnect often)."""
    cert = x509.load_pem_x509_certificate(pem)
    return of_certificate(cert), format(cert.serial_number, "x")
