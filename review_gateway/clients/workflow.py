"""The gateway's client of WorkflowService (grpc.aio), mapping gRPC failures to HTTP errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as pb_grpc
from review_gateway.errors import ApiError
from sidecar_core.serving.grpc_server import error_info

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WorkflowService"].full_name
ChannelFactory = Callable[[], grpc.aio.Channel]
R = TypeVar("R")

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Codes whose gRPC detail text may describe our network, not the request: replaced.
_GENERIC = {
    grpc.StatusCode.UNAVAILABLE: "the workflow service is unavailable; try again shortly",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the workflow service did not answer in time",
    grpc.StatusCode.UNKNOWN: "the workflow service failed",
    grpc.StatusCode.CANCELLED: "the workflow call was cancelled",
}


def to_api_error(err: grpc.aio.AioRpcError) -> ApiError:
    """The HTTP error for a failed workflow call (reason from its ErrorInfo when present)."""
    code = err.code()
    info = error_info(err)
    reason = info.reason if info is not None and info.reason else code.name
    message = _GENERIC.get(code) or err.details() or code.name.lower()
    return ApiError(HTTP_STATUS.get(code, 500), code.name, reason, message)


class WorkflowClient:
    """Typed calls of WorkflowService with a deadline each; failures raise ApiError."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self.stub = pb_grpc.WorkflowServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def _call(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise to_api_error(err) from None

    async def list_audit_events(
        self, request: pb.ListAuditEventsRequest
    ) -> pb.ListAuditEventsResponse:
        return await self._call(self.stub.ListAuditEvents, request)

    async def get_asset(self, request: pb.GetAssetRequest) -> pb.GetAssetResponse:
        return await self._call(self.stub.GetAsset, request)

    async def health_problem(self, timeout_s: float = 2.0) -> str | None:
        """None when grpc.health.v1 reports the WorkflowService SERVING, else what is wrong."""
        try:
            reply = await self.health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            return f"health check failed: {err.code().name}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return f"health status {status}"
        return None


class WorkflowConnection:
    """Creates the channel on first use, inside the serving event loop; closed at shutdown."""

    def __init__(self, factory: ChannelFactory, timeout_s: float) -> None:
        self.factory = factory
        self.timeout_s = timeout_s
        self._client: WorkflowClient | None = None

    def client(self) -> WorkflowClient:
        if self._client is None:
            self._client = WorkflowClient(self.factory(), self.timeout_s)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.channel.close()
