"""Health checks of the mesh the gateway depends on: ingest, normalizer, Triton, NATS, workers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from review_gateway.health.checks import DependencyStatus, HealthCheck
from review_gateway.settings import GatewaySettings
from sidecar_core.security.mesh_tls import MeshCredentials


def grpc_health_check(name: str, address: str, timeout_s: float,
                      credentials: MeshCredentials) -> HealthCheck:
    """SERVING from the service's grpc.health.v1 (asked over the mesh's mTLS) means ready."""

    async def check() -> DependencyStatus:
        async with credentials.aio_channel(address) as channel:
            try:
                resp = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                return DependencyStatus(name, False, f"{address}: {exc.code().name}")
        ready = resp.status == health_pb2.HealthCheckResponse.SERVING
        return DependencyStatus(name, ready, "" if ready else f"{address}: not serving")

    check.__name__ = name
    return check


def triton_check(url: str, timeout_s: float) -> HealthCheck:
    async def check() -> DependencyStatus:
        from tritonclient.grpc.aio import InferenceServerClient

        client = InferenceServerClient(url)
        try:
            ready = bool(await client.is_server_ready(client_timeout=timeout_s))
        except Exception:  # unreachable, refused, timed out: not ready
            ready = False
        finally:
            await client.close()
        return DependencyStatus("triton", ready, "" if ready else f"{url}: server not ready")

    check.__name__ = "triton"
    return check


def tcp_check(name: str, url: str, timeout_s: float) -> HealthCheck:
    """A TCP connect to e.g. nats://host:port; with a list of cluster members, any one will do."""
    hostports = [u.split("://", 1)[-1].rsplit("@", 1)[-1] for u in url.split(",") if u.strip()]

    async def check() -> DependencyStatus:
        problems = []
        for hostport in hostports:
            host, _, port = hostport.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                                   timeout_s)
            except (OSError, TimeoutError) as exc:
                problems.append(f"{hostport}: {type(exc).__name__}")
                continue
            writer.close()
            return DependencyStatus(name, True)
        return DependencyStatus(name, False, "; ".join(problems))

    check.__name__ = name
    return check


def ready_file_check(name: str, path: Path) -> HealthCheck:
    """A worker without a port announces readiness with a file in DATA_DIR/run."""

    async def check() -> DependencyStatus:
        try:
            os.kill(int((await asyncio.to_thread(path.read_text)).strip()), 0)
        except (OSError, ValueError):
            return DependencyStatus(name, False, f"{name} worker is not running")
        return DependencyStatus(name, True)

    check.__name__ = name
    return check


def mesh_checks(settings: GatewaySettings) -> list[HealthCheck]:
    """Every dependency `sidecar up` starts, from the shared settings."""
    t = settings.health_timeout_s
    mesh = settings.mesh_credentials("gateway")
    checks = [
        grpc_health_check("ingest", settings.ingest_address, t, mesh),
        grpc_health_check("normalizer", settings.normalizer_address, t, mesh),
    ]
    if settings.health_ready_files:
        ready = settings.data_dir / "run" / "preprocess.ready"
        checks.append(ready_file_check("preprocess", ready))
    if settings.triton_url:
        checks.append(triton_check(settings.triton_url, t))
    if settings.nats_url:
        checks.append(tcp_check("nats", settings.nats_url, t))
    return checks
