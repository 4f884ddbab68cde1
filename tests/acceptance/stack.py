"""`sidecar up` started exactly as the README says, as a child process, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench.stack import Stack as ProductStack
from bench.stack import clean_env
from sidecar_app.runtime.supervisor import DEFAULT_PORTS
from tests.servers import free_port

# The installed console script, as a user runs it (`.venv/bin/sidecar`).
SIDECAR = str(Path(sys.executable).parent / "sidecar")
PASSWORD = "acceptance horse battery staple"


def run_cli(*args: str, stdin: str | None = None, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `sidecar ARGS...` and returns what it printed (never raises on a non-zero exit)."""
    return subprocess.run([SIDECAR, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env())


@dataclass
class Stack(ProductStack):
    """A running `sidecar up` (started and stopped by the benches' helper, one owner of the
    process), with what the acceptance tests add: an admin login, a module's two facilities,
    CLI calls that return instead of raising, an HTTP client and SQL on its database."""

    admin: str = "acc_admin"
    password: str = PASSWORD
    # The two facilities a test module sends to; another module on the same stack has its own.
    north: str = "acc_north"
    south: str = "acc_south"

    @property
    def north_ae(self) -> str:
        return ae_title(self.north)

    @property
    def south_ae(self) -> str:
        return ae_title(self.south)

    def cli(self, *args: str, stdin: str | None = None,  # type: ignore[override]
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """An admin command against this stack's data dir (never raises on a non-zero exit)."""
        return run_cli(*args, "--data-dir", str(self.data_dir), stdin=stdin, timeout=timeout,
                       env=clean_env(**self.env))

    def login(self, username: str | None = None, password: str | None = None) -> str:
        return super().login(username or self.admin, password or self.password)

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client on the gateway, logged in as the admin unless a token is given."""
        return httpx.Client(base_url=self.base_url, timeout=60,
                            headers={"Authorization": f"Bearer {token or self.login()}"})

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of one query on the stack's own database (to see what no API shows)."""
        import psycopg

        with psycopg.connect(self.runtime()["database_url"]) as conn:
            return list(conn.execute(query, params).fetchall())


class DemoStack(Stack):
    """`sidecar demo` (up plus the bundled synthetic studies) as a user starts it; the admin
    is the demo's own, its password read from the file the demo writes."""

    def start(self, *extra: str, timeout: float = 540.0, command: str = "demo") -> None:
        super().start(*extra, timeout=timeout, command=command)  # under pytest-timeout's 600 s
        self.admin = "demo"
        self.password = (self.data_dir / "demo-password.txt").read_text().strip()

    @property
    def viewer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['viewer']}"


@contextmanager
def stack_root(prefix: str = "sidecar-acc-") -> Iterator[Path]:
    """A fresh folder for a stack's data dir, outside pytest's basetemp: as root, pgserver runs
    PostgreSQL as the user `pgserver` and opens the data dir's parents to it, but every pytest
    session that starts puts /tmp/pytest-of-root back to 0700 (eight engineers run tests)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        keep = os.environ.get("SIDECAR_TEST_KEEP_LOGS")  # a folder: each stack's logs go there
        if keep:
            for logs in root.rglob("logs"):
                if logs.is_dir():
                    shutil.copytree(logs, Path(keep) / root.name, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def ae_title(facility: str) -> str:
    """The AE title a test facility is added with: its name upper-cased."""
    return facility.upper()[:16]


def add_facilities(stack: Stack, *names: str) -> None:
    for name in names:
        done = stack.cli("facility", "add", name, "--ae-title", ae_title(name))
        assert done.returncode == 0, done.stderr


def new_stack(root: Path, facilities: tuple[str, ...] = ("acc_north", "acc_south")) -> Stack:
    """A stack on a fresh data dir with facilities (AE title = facility name upper-cased) and
    an admin user, created with the README's commands before `sidecar up` starts."""
    stack = Stack(root / "data", ports={name: free_port() for name in DEFAULT_PORTS})
    add_facilities(stack, *facilities)
    done = stack.cli("user", "add", stack.admin, "--role", "admin", "--password-stdin",
                     stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    return stack


def site_on(stack: Stack, tag: str) -> Stack:
    """The same running stack seen from one test module: two facilities of its own,
    `{tag}_north` and `{tag}_south`, added now (a module's settings, studies and radiologists
    stay in its facilities, out of every other module's sight)."""
    site = replace(stack, north=f"{tag}_north", south=f"{tag}_south")
    add_facilities(site, site.north, site.south)
    return site
