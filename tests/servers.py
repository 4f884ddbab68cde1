"""Real PostgreSQL and NATS JetStream servers for tests, started and stopped by the tests."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.stack import free_port
from sidecar_app.runtime.embedded import nats_binary
from sidecar_core.messaging import nats_auth
from sidecar_core.messaging.nats_auth import NatsAuth
from sidecar_core.messaging.subjects import Topology
from tests import pki as test_pki


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of a PostgreSQL admin database: the embedded pgserver (always available)."""
    import pgserver

    root = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
    server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """Creates an empty database on the server of `admin_url` and drops it afterwards."""
    name = "sidecar_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin_url, name)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.set(database=name).render_as_string(hide_password=False)


def nats_server_binary() -> str:
    return nats_binary()


# A test server serves many topologies (each test its own prefix): its users' permissions are
# the product's table over a wildcard prefix and wildcard stream names.
TEST_TOPOLOGY = Topology("*", "*")


@functools.cache
def nats_users_dir() -> Path:
    """The tests' DATA_DIR for NATS: the tests' CA folder (tls/) and every user's nkey seed
    (nats-auth/), shared by every test server of this process."""
    root = test_pki.folder().parent
    nats_auth.ensure_users(root)
    return root


def nats_options(user: str = "operator") -> dict[str, Any]:
    """`nats.connect` keyword arguments of `user` on any test server of this process."""
    return NatsAuth.of(nats_users_dir(), user).connect_options()


class NatsServer:
    """A real nats-server with JetStream on a free loopback port; stop/start keep port and data.

    Secured as the embedded one of `sidecar up` (sidecar_core.messaging.nats_auth): TLS with a
    required client certificate of the tests' CA and one nkey user per process with the
    product's permissions; `secure=False` for a plain server."""

    def __init__(self, secure: bool = True) -> None:
        self.port = free_port()
        self.store = Path(tempfile.mkdtemp(prefix="sidecar-nats-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.secure = secure

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def auth(self, user: str = "operator") -> NatsAuth:
        """The credentials of `user` (operator: every permission) on this server."""
        return NatsAuth.of(nats_users_dir(), user) if self.secure else NatsAuth(user)

    def connect_options(self, user: str = "operator") -> dict[str, Any]:
        """`nats.connect` keyword arguments of `user`."""
        return self.auth(user).connect_options()

    @staticmethod
    def install(data_dir: Path) -> None:
        """The tests' certificates and NATS seeds in DATA_DIR (what `sidecar up` makes), so a
        service started on `data_dir` connects as its own user."""
        test_pki.install(data_dir)
        shutil.copytree(nats_users_dir() / nats_auth.AUTH_DIR, data_dir / nats_auth.AUTH_DIR,
                        dirs_exist_ok=True)

    def start(self) -> None:
        if self.secure:
            users = nats_auth.ensure_users(nats_users_dir())
            config = self.store / "nats.conf"
            config.write_text(nats_auth.server_config(
                TEST_TOPOLOGY, users, port=self.port, store=self.store,
                tls_dir=test_pki.folder()))
            args = ["-c", str(config)]
        else:
            args = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(
            [nats_server_binary(), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)


@contextmanager
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
