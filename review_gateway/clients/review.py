"""The gateway's client of ReviewService (grpc.aio) with deadlines; failures raise ApiError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rpb_grpc
from review_gateway.clients.workflow import to_api_error
from review_gateway.errors import ApiError
from sidecar_core.serving.grpc_server import error_info

R = TypeVar("R")


class ReviewCallError(ApiError):
    """An ApiError that keeps the ErrorInfo metadata (e.g. current_version, retry_after_s)."""

    def __init__(self, base: ApiError, metadata: dict[str, str]) -> None:
        super().__init__(base.status, base.code, base.reason, base.message, base.headers)
        self.metadata = metadata


class ReviewClient:
    """Typed calls of ReviewService on the workflow channel."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float = 10.0) -> None:
        self.stub = rpb_grpc.ReviewServiceStub(channel)
        self.timeout_s = timeout_s

    async def call(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            info = error_info(err)
            error = ReviewCallError(to_api_error(err), dict(info.metadata) if info else {})
            if error.status == 429 and "retry_after_s" in error.metadata:
                error.headers["Retry-After"] = error.metadata["retry_after_s"]
            raise error from None
