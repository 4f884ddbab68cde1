"""mTLS material of one process: the CA it trusts and the certificate and key it presents, as
gRPC server credentials (client certificate required) and client channels.

Where it comes from, first match wins:
- `SIDECAR_TLS_CA`, `SIDECAR_TLS_CERT`, `SIDECAR_TLS_KEY` (files; Kubernetes Secrets, a
  hospital's PKI, cert-manager);
- a credentials folder given on the command line (`--credentials DIR`: `ca.crt` and one
  `*.crt` with its `*.key`, as `sidecar adapter add` writes it);
- `DATA_DIR/tls/ca.crt`, `DATA_DIR/tls/<name>.crt` and `.key`, which `sidecar up` creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sidecar_core.security.identity import Identity, of_pem

TLS_DIR = "tls"


class MissingCredentials(RuntimeError):
    """No certificate for this process: a clear message naming where one was looked for."""


@dataclass(frozen=True)
class MeshCredentials:
    """The CA certificate trusted, and this process's certificate and key (PEM)."""

    ca: bytes
    cert: bytes
    key: bytes
    source: str = ""

    @property
    def identity(self) -> Identity:
        return of_pem(self.cert)[0]

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS 1.2+ server credentials that require a client certificate signed by the CA."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def channel(self, target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel to `target` presenting this certificate."""
        return grpc.secure_channel(target, self.channel_credentials(), options=list(options))

    def aio_channel(self, target: str, options: Sequence[tuple[str, Any]] = ()
                    ) -> grpc.aio.Channel:
        """An asyncio channel to `target` presenting this certificate."""
        return grpc.aio.secure_channel(target, self.channel_credentials(),
                                       options=list(options))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MissingCredentials(f"cannot read the {what} {path}: {exc.strerror}") from None


def from_files(ca: Path, cert: Path, key: Path) -> MeshCredentials:
    creds = MeshCredentials(_read(ca, "CA certificate"), _read(cert, "certificate"),
                            _read(key, "private key"), source=str(cert))
    try:
        creds.identity  # noqa: B018 (fails early on a certificate naming no identity)
    except ValueError as exc:
        raise MissingCredentials(f"{cert}: {exc}") from None
    return creds


def from_folder(folder: Path, stem: str | None = None) -> MeshCredentials:
    """`ca.crt` plus `<stem>.crt`/`.key` in `folder`, or its only other certificate."""
    if stem is None:
        certs = sorted(p for p in folder.glob("*.crt") if p.name != "ca.crt")
        if len(certs) != 1:
            raise MissingCredentials(
                f"{folder} must hold ca.crt and exactly one other certificate with its .key "
                f"(found {len(certs)})")
        stem = certs[0].stem
    return from_files(folder / "ca.crt", folder / f"{stem}.crt", folder / f"{stem}.key")


def load(settings: Any, name: str) -> MeshCredentials:
    """This process's credentials from its settings (`tls_ca`, `tls_cert`, `tls_key`) or, for
    service `name`, from DATA_DIR/tls."""
    ca, cert, key = (getattr(settings, f, None) for f in ("tls_ca", "tls_cert", "tls_key"))
    if cert or key:
        if not (cert and key):
            raise MissingCredentials("SIDECAR_TLS_CERT and SIDECAR_TLS_KEY go together")
        folder = Path(settings.data_dir) / TLS_DIR
        return from_files(Path(ca) if ca else folder / "ca.crt", Path(cert), Path(key))
    folder = Path(settings.data_dir) / TLS_DIR
    if not (folder / f"{name}.crt").exists():
        raise MissingCredentials(
            f"no certificate for {name}: expected {folder / (name + '.crt')} (`sidecar up` "
            "creates it; `sidecar tls init` makes the folder for services started by hand) "
            "or SIDECAR_TLS_CA, SIDECAR_TLS_CERT and SIDECAR_TLS_KEY")
    return from_folder(folder, name)
