"""How a process proves who it is to NATS, and the embedded nats-server's secured configuration.

Each process connects as its own nkey user (sidecar_core.messaging.permissions) over TLS with its
mesh certificate. Its nkey seed is, first match wins:
- `SIDECAR_NATS_CREDS`: a credentials file, either a bare nkey seed (`SU…`, one line) or a
  decorated `.creds` file (user JWT and seed, for NATS in operator/JWT mode);
- `DATA_DIR/nats-auth/<user>.nk`, which `sidecar up` creates (0600, in a 0700 folder, kept
  across restarts; nats-server's configuration holds only the public keys).

The TLS material is the mesh's (`SIDECAR_TLS_CA/CERT/KEY`, else `DATA_DIR/tls`): the embedded
server requires a client certificate signed by the mesh CA (`verify: true`).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from sidecar_core.messaging import permissions
from sidecar_core.messaging.subjects import Topology

AUTH_DIR = "nats-auth"
TLS_DIR = "tls"
CONFIG = "nats.conf"


@dataclass(frozen=True)
class NatsAuth:
    """One process's bus credentials: its user, nkey seed or creds file, and TLS files."""

    user: str
    creds: Path | None = None  # an nkey seed file or a JWT .creds file
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def of(cls, data_dir: Path, user: str, creds: Path | None = None, ca: Path | None = None,
           cert: Path | None = None, key: Path | None = None) -> NatsAuth:
        """Explicit files where given, else the ones `sidecar up` makes in `data_dir`; a
        default file that does not exist is left out (a NATS without auth or TLS)."""
        tls = data_dir / TLS_DIR
        seed = seed_path(data_dir, user)
        return cls(
            user,
            creds or (seed if seed.exists() else None),
            ca or _existing(tls / "ca.crt"),
            cert or _existing(tls / f"{user}.crt"),
            key or _existing(tls / f"{user}.key"),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """Trusts the CA and presents the certificate; used only if the server requires TLS."""
        if self.ca is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key or self.cert))
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of `nats.connect`."""
        options: dict[str, Any] = {"inbox_prefix": permissions.inbox_prefix(self.user)}
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
        if self.creds is not None:
            text = self.creds.read_text()
            if "BEGIN NATS USER JWT" in text:
                options["user_credentials"] = str(self.creds)
            else:
                options["nkeys_seed_str"] = text.strip()
        return options


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def seed_path(data_dir: Path, user: str) -> Path:
    return data_dir / AUTH_DIR / f"{user}.nk"


def new_seed() -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed.strip())).public_key.decode())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def ensure_users(data_dir: Path, users: Iterable[str] = permissions.USERS) -> dict[str, str]:
    """Each user's seed in DATA_DIR/nats-auth (made once, kept); returns user → public key."""
    folder = data_dir / AUTH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    out = {}
    for user in users:
        path = seed_path(data_dir, user)
        if not path.exists():
            _write_private(path, new_seed() + b"\n")
        out[user] = public_key(path.read_bytes())
    return out


def server_config(topology: Topology, users: Mapping[str, str], *, port: int, store: Path,
                  tls_dir: Path, host: str = "127.0.0.1") -> str:
    """The embedded nats-server: loopback only, JetStream in `store`, TLS with a required
    client certificate of the mesh, and one nkey user per process (no anonymous access)."""
    def q(value: object) -> str:
        return json.dumps(str(value))

    return "\n".join([
        "# Written by `sidecar up` (sidecar_core.messaging.nats_auth); rewritten at each start.",
        f"listen: {q(f'{host}:{port}')}",
        f"jetstream {{ store_dir: {q(store)} }}",
        "tls {",
        f"  cert_file: {q(tls_dir / 'nats.crt')}",
        f"  key_file: {q(tls_dir / 'nats.key')}",
        f"  ca_file: {q(tls_dir / 'ca.crt')}",
        "  verify: true",
        "  timeout: 5",
        "}",
        permissions.authorization(topology, users),
    ])


def write_server_config(data_dir: Path, topology: Topology, *, port: int, store: Path,
                        tls_dir: Path | None = None) -> Path:
    """Makes the users' seeds and writes DATA_DIR/nats-auth/nats.conf (0600); returns it."""
    users = ensure_users(data_dir)
    path = data_dir / AUTH_DIR / CONFIG
    _write_private(path, server_config(topology, users, port=port, store=store,
                                       tls_dir=tls_dir or data_dir / TLS_DIR).encode())
    return path
