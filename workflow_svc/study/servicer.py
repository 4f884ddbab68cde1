"""WorkflowService over gRPC: a study's audit events and assets, from the study queries."""

from __future__ import annotations

import grpc

from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors
from workflow_svc.identity.access import current_caller
from workflow_svc.study import queries

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkflowService"].full_name


class WorkflowServicer(pb_grpc.WorkflowServiceServicer):
    """A study's audit trail and its assets (the rest of the read side is ReviewService's)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @handle_errors
    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListAuditEventsResponse:
        return await queries.list_audit_events(
            self.db, request.study_id, current_caller().scope(),
            page_size=request.page_size, page_token=request.page_token)

    @handle_errors
    async def GetAsset(self, request: pb.GetAssetRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetAssetResponse:
        slice_index = request.slice_index if request.HasField("slice_index") else None
        return await queries.get_asset(
            self.db, request.study_id, request.asset_id, current_caller().scope(),
            series_id=request.series_id, kind=request.kind, preset=request.preset,
            slice_index=slice_index)


def register(server: GrpcServer, db: Database) -> WorkflowServicer:
    """Adds the WorkflowService (and its health/reflection names) to a GrpcServer."""
    servicer = WorkflowServicer(db)
    server.register(pb_grpc.add_WorkflowServiceServicer_to_server, servicer, [SERVICE_NAME])
    return servicer
