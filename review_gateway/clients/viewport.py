"""On-demand viewports: a viewport without an Asset row is rendered by the ingest service."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from protos.sidecar.ingest.v1 import viewport_service_pb2 as vpb
from protos.sidecar.ingest.v1 import viewport_service_pb2_grpc as vgrpc
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from review_gateway.dicomweb.index_cache import rpc_error

MISSING = "ASSET_NOT_FOUND"  # GetAsset's answer for a study it found but a viewport it lacks


class ViewportClient:
    """Calls ViewportService.RenderViewport on the ingest channel opened by ``channel``."""

    def __init__(self, channel: Callable[[], grpc.aio.Channel], timeout_s: float = 30.0) -> None:
        self.channel = channel
        self.timeout_s = timeout_s

    async def render(self, request: pb.GetAssetRequest) -> pb.GetAssetResponse:
        """The viewport ``request`` asks for, rendered and stored now (or by a racing request),
        as GetAsset would have answered it."""
        stub = vgrpc.ViewportServiceStub(self.channel())
        try:
            made = await stub.RenderViewport(
                vpb.RenderViewportRequest(
                    study_id=request.study_id, series_id=request.series_id,
                    slice_index=request.slice_index, preset=request.preset),
                timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from None
        return pb.GetAssetResponse(
            asset=pb.Asset(asset_id=made.asset_id, kind="viewport", content_type=made.content_type,
                           preset=request.preset, slice_index=request.slice_index,
                           sha256=made.sha256),
            object_key=made.object_key)
