"""How a process proves who it is to NATS, and the embedded nats-server's secured configuration.

Each process connects as its own nkey user (sidecar_core.messaging.permissions) over TLS with its
mesh certificate. Its nkey seed is, first match wins:
- `SIDECAR_NATS_CREDS`: a credentials file, either a bare nkey seed (`SU…`, one line) or a
  decorated `.creds` file (user JWT and seed, for NATS in operator/JWT mode);
- `DATA_DIR/nats-auth/<user>.nk`, which `sidecar up` creates (0600, in a 0700 folder, kept
  across restarts; nats-server's configuration holds only the public keys).

The TLS material is the mesh's (`SIDECAR_TLS_CA/CERT/KEY`, else `DATA_DIR/tls`): the embedded
server requires a client certificate signed by the mesh CA (`verify: true`). An external NATS
whose certificate another CA signed is trusted with `SIDECAR_NATS_TLS_CA` (that CA's PEM).
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


# ---- external NATS (deploy/) -------------------------------------------------------------------

DEPLOY_USERS_CONF = "deploy/nats/sidecar-users.conf"
DEPLOY_USERS_CONFIGMAP = "deploy/k8s/nats-users.yaml"
_GENERATED = ("# Generated from sidecar_core/messaging/permissions.py by `make nats-permissions`; "
              "do not edit.")


def nkey_variable(user: str) -> str:
    """The environment variable of nats-server that holds `user`'s public nkey."""
    return f"$SIDECAR_NKEY_{user.upper()}"


def deploy_users_conf(topology: Topology | None = None) -> str:
    """The permission table for an external nats-server (`include` it): the users' public
    nkeys come from the server's environment (SIDECAR_NKEY_<USER>)."""
    users = {user: nkey_variable(user) for user in permissions.USERS}
    return (f"{_GENERATED}\n# Users' public nkeys: the server's environment "
            "SIDECAR_NKEY_<USER> (`python -m sidecar_core.messaging.nats_auth keys DIR`).\n"
            + permissions.authorization(topology or Topology(), users))


def deploy_users_configmap(topology: Topology | None = None) -> str:
    body = "".join(f"    {line}\n" if line else "\n"
                   for line in deploy_users_conf(topology).splitlines())
    return (f"{_GENERATED}\n"
            "# The bus's users and permissions, included by nats.conf (nats.yaml).\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nats-users\n"
            "  namespace: radiology-sidecar\n  labels:\n    app.kubernetes.io/name: nats\n"
            "data:\n  sidecar-users.conf: |\n" + body)


def deploy_files() -> dict[str, str]:
    """deploy/ path → content of every generated file."""
    return {DEPLOY_USERS_CONF: deploy_users_conf(),
            DEPLOY_USERS_CONFIGMAP: deploy_users_configmap()}


def write_keys(folder: Path) -> dict[str, str]:
    """A seed per user in `folder` (kept if present); returns user → public key."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    out = {}
    for user in permissions.USERS:
        path = folder / f"{user}.nk"
        if not path.exists():
            _write_private(path, new_seed() + b"\n")
        out[user] = public_key(path.read_bytes())
    return out


def main(argv: list[str] | None = None) -> None:
    """`deploy [ROOT]`: rewrites the generated deploy/ files; `keys DIR`: a seed per user in
    DIR (give each process its own as SIDECAR_NATS_CREDS) and the public keys as the
    SIDECAR_NKEY_<USER> lines of nats-server's environment."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sidecar_core.messaging.nats_auth")
    sub = parser.add_subparsers(dest="command", required=True)
    deploy = sub.add_parser("deploy", help="write the permission table into deploy/")
    deploy.add_argument("root", nargs="?", type=Path, default=Path("."))
    keys = sub.add_parser("keys", help="make each user's nkey seed in DIR")
    keys.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "deploy":
        for relative, text in deploy_files().items():
            path = args.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
    else:
        for user, key in write_keys(args.dir).items():
            print(f"{nkey_variable(user)[1:]}={key}")


if __name__ == "__main__":
    main()
