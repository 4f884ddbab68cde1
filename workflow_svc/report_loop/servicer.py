"""ReportService over gRPC: legacy report completion (structured or raw HL7) and drafts."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from protos.sidecar.workflow.v1 import report_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.errors import InvalidArgument
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox
from sidecar_core.serving import idempotency
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors
from workflow_svc.identity.access import current_caller
from workflow_svc.report_loop import chat, drafts, legacy_reports
from workflow_svc.report_loop.hl7 import intake as hl7_intake
from workflow_svc.report_loop.hl7.ack import acks_for

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ReportService"].full_name
_STATUS = {pb.RESULT_STATUS_PRELIMINARY: "P", pb.RESULT_STATUS_FINAL: "F",
           pb.RESULT_STATUS_CORRECTED: "C"}


class ReportServicer(pb_grpc.ReportServiceServicer):
    """Thin: validates, calls the domain modules, maps the result."""

    def __init__(self, db: Database, topology: Topology, egress: EgressPolicy | None = None,
                 box: SecretBox | None = None) -> None:
        self.db = db
        self.topology = topology
        self.egress = egress
        self.box = box

    @handle_errors
    async def CompleteReport(self, request: pb.CompleteReportRequest,
                             context: grpc.aio.ServicerContext) -> pb.CompleteReportResponse:
        method = "ReportService.CompleteReport"
        earlier = await idempotency.recall(self.db, method, request.request_id)
        if earlier is not None:
            reply = pb.CompleteReportResponse.FromString(earlier)
            reply.duplicate = True
            return reply
        if request.result_status not in _STATUS:
            raise InvalidArgument("INVALID_RESULT_STATUS",
                                  "result_status must be PRELIMINARY, FINAL or CORRECTED")
        completed = (request.completed_at.ToDatetime(tzinfo=UTC)
                     if request.HasField("completed_at") else datetime.now(UTC))
        observed = (request.observed_at.ToDatetime(tzinfo=UTC)
                    if request.HasField("observed_at") else None)
        done = await legacy_reports.complete_report(
            self.db, self.topology, request.facility, legacy_reports.ReportInput(
                accession=request.accession.strip(),
                report_reference=request.report_reference[:128],
                result_status=_STATUS[request.result_status], completed_at=completed,
                source="rpc", observed_at=observed,
                details={"request_id": request.request_id}))
        reply = pb.CompleteReportResponse(legacy_report_id=str(done.report_id),
                                          matched=done.matched,
                                          study_ids=[str(i) for i in done.study_ids])
        await idempotency.remember(self.db, method, request.request_id,
                                   reply.SerializeToString())
        return reply

    @handle_errors
    async def SubmitHl7Message(self, request: pb.SubmitHl7MessageRequest,
                               context: grpc.aio.ServicerContext
                               ) -> pb.SubmitHl7MessageResponse:
        header, verdict = await hl7_intake.receive(self.db, self.topology, request.message,
                                                   "rpc", request.peer, self.box)
        err = verdict.error
        return pb.SubmitHl7MessageResponse(
            acks=acks_for(header, verdict), code=verdict.code,
            error_location=err.location if err else "", error_message=err.text if err else "")

    @handle_errors
    async def GenerateDraft(self, request: pb.GenerateDraftRequest,
                            context: grpc.aio.ServicerContext) -> pb.GenerateDraftResponse:
        return await drafts.generate(self.db, self.topology, current_caller(),
                                     request.study_id, self.egress, self.box)

    @handle_errors
    async def GetDraft(self, request: pb.GetDraftRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetDraftResponse:
        return await drafts.get(self.db, current_caller(), request.study_id)

    @handle_errors
    async def EditDraft(self, request: pb.EditDraftRequest,
                        context: grpc.aio.ServicerContext) -> pb.EditDraftResponse:
        return pb.EditDraftResponse(draft=await drafts.edit(
            self.db, self.topology, current_caller(), request.study_id,
            request.expected_version, request.text))

    @handle_errors
    async def AcceptDraft(self, request: pb.AcceptDraftRequest,
                          context: grpc.aio.ServicerContext) -> pb.AcceptDraftResponse:
        return pb.AcceptDraftResponse(draft=await drafts.accept(
            self.db, self.topology, current_caller(), request.study_id,
            request.expected_version))

    @handle_errors
    async def Chat(self, request: pb.ChatRequest,
                   context: grpc.aio.ServicerContext) -> pb.ChatResponse:
        return await chat.ask(self.db, self.topology, current_caller(), request.study_id,
                              request.message, self.egress, self.box)

    @handle_errors
    async def GetChat(self, request: pb.GetChatRequest,
                      context: grpc.aio.ServicerContext) -> pb.GetChatResponse:
        return await chat.history(self.db, current_caller(), request.study_id)


def register(server: GrpcServer, db: Database, topology: Topology,
             egress: EgressPolicy | None = None, box: SecretBox | None = None
             ) -> ReportServicer:
    servicer = ReportServicer(db, topology, egress, box)
    server.register(pb_grpc.add_ReportServiceServicer_to_server, servicer, [SERVICE_NAME])
    return servicer
