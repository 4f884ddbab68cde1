"""GrpcServer on mutual TLS with the mesh's authorization, in process: who gets in, what each
identity may call, how a refusal is audited, and reflection served only when asked for."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import select

from protos.sidecar.workflow.v1 import operations_service_pb2 as ops_pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as ops_grpc
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.enforcement import DENIED_EVENT, authorization
from sidecar_core.security.identity import of_pem
from sidecar_core.serving.grpc_server import GrpcServer
from sidecar_core.store.models import AuditEvent, MeshCredential
from tests import pki as test_pki

TOPOLOGY = Topology("mtlstest", "MTLSTEST")
HEALTH = health_pb2.HealthCheckRequest()


class Operations(ops_grpc.OperationsServiceServicer):
    async def ListDeadLetters(self, request: ops_pb.ListDeadLettersRequest,
                              context: grpc.aio.ServicerContext
                              ) -> ops_pb.ListDeadLettersResponse:
        return ops_pb.ListDeadLettersResponse()


@pytest.fixture()
async def server(db: Database) -> AsyncIterator[str]:
    srv = GrpcServer("127.0.0.1:0", test_pki.service("workflow"),
                     authorization=authorization(db, TOPOLOGY, "workflow_svc"), reflection=True)
    srv.register(ops_grpc.add_OperationsServiceServicer_to_server, Operations(),
                 ["sidecar.workflow.v1.OperationsService"])
    port = await srv.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await srv.stop(0)


async def _list(address: str, as_: str) -> ops_pb.ListDeadLettersResponse:
    async with test_pki.aio_channel(address, as_) as channel:
        return await ops_grpc.OperationsServiceStub(channel).ListDeadLetters(
            ops_pb.ListDeadLettersRequest(), timeout=10)


async def test_the_policy_table_decides_per_identity(server: str, db: Database) -> None:
    assert await _list(server, "gateway") == ops_pb.ListDeadLettersResponse()
    assert await _list(server, "operator") == ops_pb.ListDeadLettersResponse()
    for who in ("normalizer", "ingest", "hl7"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _list(server, who)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"service {who} may not call" in (refused.value.details() or "")
    async with db.read() as s:
        events = (await s.scalars(select(AuditEvent).where(
            AuditEvent.type == DENIED_EVENT))).all()
    assert sorted(e.context["identity"].rsplit("/", 1)[-1] for e in events) == [
        "hl7", "ingest", "normalizer"]
    assert {e.actor for e in events} == {"workflow_svc"}


async def test_a_revoked_adapter_is_refused_even_on_health(server: str, db: Database) -> None:
    creds = test_pki.issue("adapter", "revoked-one", "fac_r")
    async with creds.aio_channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert (await stub.Check(HEALTH, timeout=10)).status == \
            health_pb2.HealthCheckResponse.SERVING
        serial = of_pem(creds.cert)[1]
        async with db.unit_of_work() as s:
            s.add(MeshCredential(serial=serial, kind="adapter", name="revoked-one",
                                 facility="fac_r", expires_at=dt.datetime.now(dt.UTC),
                                 revoked_at=dt.datetime.now(dt.UTC)))
        # the revocation list is re-read at most every 5 s
        for _ in range(30):
            try:
                await stub.Check(HEALTH, timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "revoked" in (exc.details() or "")
                return
            await asyncio.sleep(0.5)
        pytest.fail("a revoked certificate was still served after 15 s")


async def test_reflection_when_enabled_is_for_operators_only(server: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with test_pki.aio_channel(server, "operator") as channel:
        answers = [a async for a in reflection_pb2_grpc.ServerReflectionStub(
            channel).ServerReflectionInfo(iter([request]), timeout=10)]
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert "sidecar.workflow.v1.OperationsService" in names
    async with test_pki.aio_channel(server, "gateway") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _ = [a async for a in reflection_pb2_grpc.ServerReflectionStub(
                channel).ServerReflectionInfo(iter([request]), timeout=10)]
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_plaintext_and_no_certificate_never_reach_a_handler(server: str) -> None:
    async with grpc.aio.insecure_channel(server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    ca = test_pki.operator().ca
    async with grpc.aio.secure_channel(server, grpc.ssl_channel_credentials(ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=5)
    assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
