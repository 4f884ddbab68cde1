"""gRPC bootstrap: an aio server on mutual TLS with the mesh authorization, health, optional
reflection, error mapping and graceful SIGTERM drain."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar_core.errors import DomainError
from sidecar_core.security.authz import AuthorizationInterceptor
from sidecar_core.security.mesh_tls import MeshCredentials

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
DOMAIN = "sidecar.radiology"


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]
) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a google.rpc.Status with one ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def error_info(err: grpc.aio.AioRpcError | grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Extracts the ErrorInfo of a failed call (client side), if any."""
    trailers = err.trailing_metadata() or ()
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None


def handle_errors(method: F) -> F:
    """Maps DomainError to its status code, a lost database connection (a restart, an outage)
    to UNAVAILABLE, anything unexpected to INTERNAL with a request id."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except DomainError as exc:
            code = getattr(grpc.StatusCode, exc.code)
            await context.abort(
                code,
                exc.message,
                trailing_metadata=rich_status(code, exc.message, exc.reason, exc.metadata),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            if _database_unavailable(exc):
                message = (f"database unavailable ({_short(exc)}); send it again later")
                log.warning("%s: %s", method.__qualname__, message)
                code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, message, trailing_metadata=rich_status(
                    code, message, "DATABASE_UNAVAILABLE", {}))
            request_id = _request_id(context)
            log.exception("internal error in %s (request %s)", method.__qualname__, request_id)
            message = f"internal error (request id {request_id})"
            await context.abort(
                grpc.StatusCode.INTERNAL,
                message,
                trailing_metadata=rich_status(
                    grpc.StatusCode.INTERNAL, message, "INTERNAL", {"request_id": request_id}
                ),
            )

    return wrapper  # type: ignore[return-value]


def _database_unavailable(exc: BaseException) -> bool:
    """A connection-level database failure (not a bad statement): worth a retry later."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _short(exc: BaseException) -> str:
    cause = exc.orig if getattr(exc, "orig", None) is not None else exc  # type: ignore[attr-defined]
    return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else ''}"


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return uuid.uuid4().hex[:16]


class GrpcServer:
    """One aio server; `register` adds servicers, `serve` runs until SIGTERM/SIGINT or stop.

    It listens on TLS only and requires a client certificate signed by the mesh CA; the
    `authorization` interceptor (default: the policy table, refusals only logged) runs before
    every other interceptor. Reflection is served only when `reflection` is true
    (SIDECAR_GRPC_REFLECTION=1), and then only to operators."""

    def __init__(self, address: str, credentials: MeshCredentials, *,
                 authorization: AuthorizationInterceptor | None = None,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 reflection: bool = False, max_message_mb: int = 256) -> None:
        opts = [
            ("grpc.max_receive_message_length", max_message_mb * 1024 * 1024),
            ("grpc.max_send_message_length", max_message_mb * 1024 * 1024),
        ]
        self.server = grpc.aio.server(
            options=opts,
            interceptors=[authorization or AuthorizationInterceptor(), *interceptors])
        self.address = address
        self.credentials = credentials
        self.reflection = reflection
        self.health = (
            health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        self.port = 0

    def register(
        self,
        add_fn: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        full_names: Iterable[str],
    ) -> None:
        add_fn(servicer, self.server)
        self.service_names.extend(full_names)

    async def start(self) -> int:
        if self.reflection:
            reflection.enable_server_reflection(
                [*self.service_names, reflection.SERVICE_NAME], self.server
            )
        self.port = self.server.add_secure_port(self.address,
                                                self.credentials.server_credentials())
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self.address}")
        await self.server.start()
        for name in [*self.service_names, ""]:
            await _set(self.health, name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_s: float = 10.0) -> None:
        for name in [*self.service_names, ""]:
            await _set(self.health, name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)


async def _set(servicer: Any, name: str, status: int) -> None:
    result = servicer.set(name, status)
    if asyncio.iscoroutine(result):
        await result


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (graceful shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
