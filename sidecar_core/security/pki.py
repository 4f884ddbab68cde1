"""The embedded certificate authority: made on first start in DATA_DIR/tls, one certificate per
service (kept across restarts, renewed before expiry), client certificates for operators and
PACS adapters.

Keys are ECDSA P-256; the folder is mode 0700 and every key 0600. Concurrent starts are safe
(an exclusive lock on DATA_DIR/tls/.lock); files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar_core.security.identity import SERVICES, Identity, of_certificate, service

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE_DAYS = 30
# Names a mesh server certificate is valid for besides its service name (loopback and the
# compose/Kubernetes service names).
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder (one process creates or renews at a time)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes `data` atomically with `mode` (the file never exists with wider permissions)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    """A certificate just issued: its PEM, its key's PEM, serial (hex) and expiry."""

    cert_pem: bytes
    key_pem: bytes
    serial: str
    not_after: dt.datetime


class Authority:
    """The CA of one data dir: signs service, operator and adapter certificates."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @classmethod
    def create(cls, common_name: str = "Radiology Sidecar mesh CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, folder: Path) -> Authority:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{folder / 'ca.key'} is not an EC key")
        return cls(cert, key)

    def save(self, folder: Path) -> None:
        write_private(folder / "ca.key", _key_pem(self.key))
        write_private(folder / "ca.crt", self.cert_pem, 0o644)

    def issue(self, identity: Identity, hosts: Iterable[str] = (), days: int = LEAF_DAYS,
              server: bool = True) -> Issued:
        """A certificate naming `identity` (URI SAN), valid for `hosts` as a server when
        `server`, always usable as a TLS client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        for host in dict.fromkeys(hosts):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
                   x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.kind)]
        if identity.facility:
            subject.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.facility))
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder().subject_name(x509.Name(subject))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(_cert_pem(cert), _key_pem(key), format(serial, "x"), not_after)


def ensure_authority(folder: Path) -> Authority:
    """The CA of `folder`, created on first use. Call with the folder locked."""
    if (folder / "ca.crt").exists() and (folder / "ca.key").exists():
        return Authority.load(folder)
    ca = Authority.create()
    ca.save(folder)
    return ca


def needs_renewal(cert_file: Path, ca: Authority, identity: Identity,
                  hosts: Iterable[str] = ()) -> bool:
    """True when the certificate is missing, expires within RENEW_BEFORE_DAYS, was signed by
    another CA, names another identity or misses one of `hosts`."""
    if not cert_file.exists() or not cert_file.with_suffix(".key").exists():
        return True
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        if cert.issuer != ca.cert.subject or of_certificate(cert) != identity:
            return True
        ca.cert.public_key().verify(  # type: ignore[call-arg, union-attr]
            cert.signature, cert.tbs_certificate_bytes,
            ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(v) for v in san.get_values_for_type(x509.DNSName)}
        names |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
        if not set(hosts) <= names:
            return True
    except Exception:
        return True
    return cert.not_valid_after_utc - _now() < dt.timedelta(days=RENEW_BEFORE_DAYS)


def write_issued(folder: Path, stem: str, issued: Issued) -> None:
    write_private(folder / f"{stem}.key", issued.key_pem)
    write_private(folder / f"{stem}.crt", issued.cert_pem, 0o644)


def ensure_mesh(folder: Path, services: Iterable[str] = SERVICES,
                extra_hosts: Iterable[str] = ()) -> list[str]:
    """The CA, a certificate per service and the local operator's, in `folder`; each created
    or renewed when needed. Returns the names of the certificates written."""
    written = []
    with locked(folder):
        ca = ensure_authority(folder)
        wanted = [(name, service(name), (name, *DEFAULT_HOSTS, *extra_hosts), True)
                  for name in services]
        wanted.append(("operator", Identity("operator", "operator"), (), False))
        for stem, identity, hosts, is_server in wanted:
            if needs_renewal(folder / f"{stem}.crt", ca, identity, hosts):
                write_issued(folder, stem, ca.issue(identity, hosts, server=is_server))
                written.append(stem)
    return written
