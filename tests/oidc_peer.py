"""A real OpenID provider for the SSO tests: node-oidc-provider (tests/oidc_provider, installed
by `make install`) on a free loopback port, with one confidential client and given accounts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_port

HERE = Path(__file__).resolve().parent / "oidc_provider"
CLIENT_ID = "sidecar-review"
CLIENT_SECRET = "test-only-client-secret-0123456789"


@dataclass
class OidcPeer:
    """The provider's process; `issuer` is its URL. `accounts`: login → claims."""

    accounts: Mapping[str, Mapping[str, Any]]
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        node = shutil.which("node")
        assert node, "node is not installed (make install installs it with the front end)"
        assert (HERE / "node_modules" / "oidc-provider").is_dir(), \
            "tests/oidc_provider is not installed: run `make install`"
        config = {"issuer": self.issuer, "port": self.port, "client_id": CLIENT_ID,
                  "client_secret": CLIENT_SECRET, "redirect_uris": self.redirect_uris,
                  "post_logout_redirect_uris": self.post_logout_redirect_uris,
                  "accounts": self.accounts}
        env = {**os.environ, "OIDC_PEER_CONFIG": json.dumps(config), "NODE_ENV": "test"}
        self.process = subprocess.Popen([node, str(HERE / "provider.mjs")], cwd=HERE, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        text=True)
        wait_port(self.port, timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def oidc_peer(accounts: Mapping[str, Mapping[str, Any]], redirect_uris: list[str],
              post_logout_redirect_uris: list[str]) -> Iterator[OidcPeer]:
    peer = OidcPeer(accounts, redirect_uris, post_logout_redirect_uris)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
