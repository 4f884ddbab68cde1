"""`python -m sidecar_core.serving.health_probe PORT`, the exec probe of Kubernetes and compose:
it presents the process's mesh certificate (SIDECAR_TLS_* or DATA_DIR/tls) and exits 0 only
when the server answers SERVING."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from sidecar_core.security import pki
from sidecar_core.serving import health_probe
from sidecar_core.serving.grpc_server import GrpcServer
from tests import pki as test_pki

MODULE = "sidecar_core.serving.health_probe"


@pytest.fixture()
async def server() -> AsyncIterator[GrpcServer]:
    srv = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(0)


@pytest.fixture()
def tls_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """SIDECAR_TLS_* naming the ingest's files, as a Kubernetes Secret mount does."""
    tls = tmp_path / "tls"
    monkeypatch.setenv("SIDECAR_TLS_CA", str(tls / "ca.crt"))
    monkeypatch.setenv("SIDECAR_TLS_CERT", str(tls / "ingest.crt"))
    monkeypatch.setenv("SIDECAR_TLS_KEY", str(tls / "ingest.key"))
    return tls


async def _probe(*argv: str) -> int:
    # The server runs on this event loop: the blocking probe goes to a thread.
    return await asyncio.to_thread(health_probe.main, list(argv))


async def test_serving_with_the_certificate_named_by_the_environment(
        server: GrpcServer, tls_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _probe(str(server.port)) == 0
    assert "SERVING" in capsys.readouterr().out


async def test_serving_with_a_service_certificate_from_the_data_dir(
        server: GrpcServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_DATA_DIR", str(tmp_path))
    assert await _probe(str(server.port), "--service", "normalizer") == 0


async def test_not_serving_is_a_failure(server: GrpcServer, tls_env: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    await server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await _probe(str(server.port)) == health_probe.NOT_HEALTHY
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"127.0.0.1:{server.port}: NOT_SERVING") and "\n" not in err


async def test_an_unknown_grpc_service_is_a_failure(server: GrpcServer, tls_env: Path) -> None:
    assert await _probe(str(server.port), "--check", "no.such.Service") == \
        health_probe.NOT_HEALTHY


async def test_a_closed_port_fails_within_the_timeout(
        tls_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
    port = await srv.start()
    await srv.stop(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _probe(str(port), "--timeout", "2") == health_probe.NOT_HEALTHY
    assert loop.time() - started < 10
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err


async def test_a_certificate_of_another_ca_is_refused(
        server: GrpcServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    pki.ensure_mesh(other)
    monkeypatch.setenv("SIDECAR_TLS_CA", str(other / "ca.crt"))
    monkeypatch.setenv("SIDECAR_TLS_CERT", str(other / "ingest.crt"))
    monkeypatch.setenv("SIDECAR_TLS_KEY", str(other / "ingest.key"))
    assert await _probe(str(server.port), "--timeout", "2") == health_probe.NOT_HEALTHY


async def test_no_credentials_exit_2_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("SIDECAR_TLS_CA", "SIDECAR_TLS_CERT", "SIDECAR_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert await _probe("50052") == health_probe.NO_CREDENTIALS
    monkeypatch.setenv("SIDECAR_TLS_CA", str(tmp_path / "tls" / "ca.crt"))
    monkeypatch.setenv("SIDECAR_TLS_CERT", str(tmp_path / "missing.crt"))
    monkeypatch.setenv("SIDECAR_TLS_KEY", str(tmp_path / "missing.key"))
    assert await _probe("50052") == health_probe.NO_CREDENTIALS
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "missing.crt" in err[1]


async def test_the_module_runs_as_an_exec_probe(server: GrpcServer, tls_env: Path) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", MODULE, str(server.port)],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"health probe: 127.0.0.1:{server.port}: SERVING"
