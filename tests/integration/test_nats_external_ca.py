"""An external NATS whose certificate a CA of its own signed (a hospital's NATS, not the mesh's):
a service trusts it through SIDECAR_NATS_TLS_CA and still presents its mesh certificate and its
nkey; without that setting the server's certificate is refused (the mesh CA did not sign it).

A real nats-server on a free loopback port, TLS with a required client certificate of the mesh CA
(what docs/deployment.md asks of such a server) and the product's users and permissions."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from sidecar_core.messaging import nats_auth, permissions
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import pki
from sidecar_core.settings import CommonSettings
from tests.pki import web_certificate
from tests.servers import free_port, nats_server_binary, wait_port


@pytest.fixture
def external(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(data dir with the mesh and the seeds, the NATS server's own CA, its URL)."""
    data = tmp_path / "data"
    pki.ensure_mesh(data / "tls")
    users = nats_auth.ensure_users(data)
    own = tmp_path / "nats-pki"
    own.mkdir()
    own_ca, cert, key = web_certificate(own, "Hospital NATS CA")
    port = free_port()
    conf = tmp_path / "nats.conf"

    def q(value: object) -> str:
        return json.dumps(str(value))

    conf.write_text("\n".join([
        f"listen: {q(f'127.0.0.1:{port}')}",
        f"jetstream {{ store_dir: {q(tmp_path / 'js')} }}",
        f"tls {{ cert_file: {q(cert)}, key_file: {q(key)}, "
        f"ca_file: {q(data / 'tls' / 'ca.crt')}, verify: true, timeout: 5 }}",
        permissions.authorization(Topology(), users),
    ]))
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield data, own_ca, f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _connect(settings: CommonSettings, url: str) -> int:
    """Connects as the workflow user; the number of JetStream streams its account sees."""
    conn = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                              connect_timeout=5, **settings.nats_auth("workflow")
                              .connect_options())
    try:
        info = await conn.jetstream().account_info()
        return int(info.streams)
    finally:
        await conn.close()


async def test_the_nats_ca_setting_trusts_an_external_nats_of_its_own_pki(
        external: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    data, own_ca, url = external
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(data))
    monkeypatch.setenv("SIDECAR_NATS_TLS_CA", str(own_ca))
    settings = CommonSettings()
    auth = settings.nats_auth("workflow")
    assert auth.ca == own_ca and auth.cert == data / "tls" / "workflow.crt"
    assert await _connect(settings, url) == 0


async def test_without_it_the_mesh_ca_refuses_the_external_nats_certificate(
        external: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    data, _own_ca, url = external
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(data))
    monkeypatch.delenv("SIDECAR_NATS_TLS_CA", raising=False)
    settings = CommonSettings()
    assert settings.nats_auth("workflow").ca == data / "tls" / "ca.crt"
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        await _connect(settings, url)
