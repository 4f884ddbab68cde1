"""The mesh's mTLS material for tests: one CA per test process (in a temporary folder, removed at
exit), service, operator and adapter credentials signed by it, and channels that present them."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from sidecar_core.security import pki, session_tokens
from sidecar_core.security.identity import Identity
from sidecar_core.security.mesh_tls import MeshCredentials, from_folder


@functools.cache
def folder() -> Path:
    """DATA_DIR/tls of the tests' CA, made on first use."""
    root = Path(tempfile.mkdtemp(prefix="sidecar-test-pki-"))
    atexit.register(shutil.rmtree, root, True)
    tls = root / "tls"
    pki.ensure_mesh(tls)
    return tls


def install(data_dir: Path) -> Path:
    """Copies the tests' CA and service certificates into DATA_DIR/tls and makes the session
    token key pair (what `sidecar up` would have made), so services started on `data_dir` find
    them; returns the tls folder."""
    session_tokens.ensure_signing_key(data_dir)
    target = data_dir / "tls"
    if not (target / "ca.crt").exists():
        shutil.copytree(folder(), target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".lock", "ca.key"))
    return target


@functools.cache
def service(name: str) -> MeshCredentials:
    """The credentials of a mesh service (workflow, ingest, gateway, …) or of the operator."""
    return from_folder(folder(), name)


def operator() -> MeshCredentials:
    return service("operator")


@functools.cache
def issue(kind: str, name: str, facility: str = "") -> MeshCredentials:
    """A client credential for any identity, signed by the tests' CA."""
    ca = pki.Authority.load(folder())
    issued = ca.issue(Identity(kind, name, facility), server=False)
    return MeshCredentials(ca.cert_pem, issued.cert_pem, issued.key_pem)


def adapter(facility: str, name: str = "test-adapter") -> MeshCredentials:
    return issue("adapter", name, facility)


def aio_channel(address: str, as_: str = "gateway",
                options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """An asyncio channel to `address` presenting service `as_`'s certificate."""
    return service(as_).aio_channel(address, options)


def channel(address: str, as_: str = "operator",
            options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking channel to `address` presenting `as_`'s certificate (the operator's)."""
    return service(as_).channel(address, options)


def web_certificate(folder: Path, ca_name: str = "Test web CA") -> tuple[Path, Path, Path]:
    """(CA, certificate, key) files in `folder` of an HTTPS certificate for 127.0.0.1 and
    localhost from a CA of its own (not the mesh's), as a hospital's web CA would issue it."""
    ca = pki.Authority.create(ca_name)
    issued = ca.issue(Identity("service", "gateway"), hosts=("127.0.0.1", "localhost"))
    paths = folder / "web-ca.crt", folder / "web.crt", folder / "web.key"
    for path, pem in zip(paths, (ca.cert_pem, issued.cert_pem, issued.key_pem), strict=True):
        path.write_bytes(pem)
    return paths
