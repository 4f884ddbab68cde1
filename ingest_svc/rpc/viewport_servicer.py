"""ViewportService over gRPC: thin mapping between protobuf and the on-demand viewports."""

from __future__ import annotations

import grpc

from protos.sidecar.ingest.v1 import viewport_service_pb2 as pb
from protos.sidecar.ingest.v1 import viewport_service_pb2_grpc as pb_grpc
from sidecar_core.display.viewports import ViewportRenderer
from sidecar_core.security.user_auth import require_user
from sidecar_core.serving.grpc_server import handle_errors


class ViewportServicer(pb_grpc.ViewportServiceServicer):
    def __init__(self, renderer: ViewportRenderer) -> None:
        self.renderer = renderer

    @handle_errors
    async def RenderViewport(self, request: pb.RenderViewportRequest,
                             context: grpc.aio.ServicerContext) -> pb.RenderViewportResponse:
        made = await self.renderer.ensure(require_user().scope(), request.study_id,
                                          request.series_id, request.slice_index, request.preset)
        row = made.asset
        return pb.RenderViewportResponse(asset_id=str(row.id), object_key=row.object_key,
                                         content_type=row.content_type, sha256=row.sha256,
                                         rendered=made.rendered)
