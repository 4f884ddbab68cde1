"""ReportService over real gRPC: CompleteReport (idempotent by request_id) and SubmitHl7Message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import text

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from protos.sidecar.workflow.v1 import report_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.serving.grpc_server import GrpcServer
from sidecar_core.store.models import Facility, Study
from tests import pki as test_pki
from tests.integration.test_hl7_mllp import oru
from workflow_svc.report_loop import servicer as report_servicer

pytestmark = pytest.mark.integration


@pytest.fixture()
async def stub(database_url: str) -> AsyncIterator[tuple[pb_grpc.ReportServiceStub, Database]]:
    db = Database(database_url)
    async with db.unit_of_work() as s:
        fid = uuid.uuid4()
        s.add(Facility(id=fid, name="north", hl7_sending_facility="RIS_NORTH"))
        await s.flush()
        s.add(Study(facility_id=fid, accession="ACC-R", study_instance_uid="1.2.3.9",
                    state="ready_for_review", ingest_status="complete"))
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
    report_servicer.register(server, db, Topology("rpctest", "RPCTEST"))
    port = await server.start()
    channel = test_pki.aio_channel(f"127.0.0.1:{port}", "operator")
    try:
        yield pb_grpc.ReportServiceStub(channel), db
    finally:
        await channel.close()
        await server.stop(1)
        await db.close()


async def test_complete_report_is_idempotent(stub: tuple[pb_grpc.ReportServiceStub, Database]
                                             ) -> None:
    client, db = stub
    request = pb.CompleteReportRequest(request_id="req-1", facility="north", accession="ACC-R",
                                       report_reference="RPT-1",
                                       result_status=pb.RESULT_STATUS_FINAL)
    first = await client.CompleteReport(request)
    again = await client.CompleteReport(request)
    assert first.matched and not first.duplicate and len(first.study_ids) == 1
    assert again.duplicate and again.legacy_report_id == first.legacy_report_id
    async with db.read() as s:
        assert (await s.execute(text("select count(*) from legacy_reports"))).scalar() == 1
        assert (await s.execute(text("select state from studies"))).scalar() \
            == "legacy_report_completed"


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("facility", "nowhere", "FACILITY_NOT_FOUND"),
    ("accession", "", "INVALID_ACCESSION"),
    ("result_status", pb.RESULT_STATUS_UNSPECIFIED, "INVALID_RESULT_STATUS"),
])
async def test_complete_report_errors(stub: tuple[pb_grpc.ReportServiceStub, Database],
                                      field: str, value: object, reason: str) -> None:
    client, _ = stub
    request = pb.CompleteReportRequest(facility="north", accession="ACC-R",
                                       result_status=pb.RESULT_STATUS_FINAL)
    setattr(request, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.CompleteReport(request)
    assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert reason in str(err.value.trailing_metadata())  # ErrorInfo.reason


async def test_submit_hl7_message(stub: tuple[pb_grpc.ReportServiceStub, Database]) -> None:
    client, _ = stub
    reply = await client.SubmitHl7Message(pb.SubmitHl7MessageRequest(
        message=oru("RPC-1", "ACC-R"), peer="test"))
    assert reply.code == "AA" and b"MSA|AA|RPC-1" in reply.acks[0]
    bad = await client.SubmitHl7Message(pb.SubmitHl7MessageRequest(
        message=oru("RPC-2", "ACC-R", status="Z")))
    assert (bad.code, bad.error_location) == ("AE", "OBR-25")
