"""The server side of the mesh's authorization: every call's peer certificate names an identity,
the policy table says whether that identity may call the method, and a refused call is
PERMISSION_DENIED, reported to `on_denied` (the services audit it as a security event).

The identity of the current call is available to servicers as `current_peer()` (for example,
the facility of a PACS adapter).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from sidecar_core.security import policy
from sidecar_core.security.identity import Identity, IdentityError, of_pem

log = logging.getLogger(__name__)

_PEER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("mesh_peer", default=None)


@dataclass(frozen=True)
class Denial:
    """A refused call: the method, who asked (if the certificate named anyone) and why."""

    method: str
    identity: Identity | None
    serial: str
    reason: str
    peer_address: str


# Reports a refusal (audit); must not raise.
OnDenied = Callable[[Denial], Awaitable[None]]
# True when the certificate with this serial was revoked (adapters and operators).
IsRevoked = Callable[[str], Awaitable[bool]]


def current_peer() -> Identity | None:
    """The verified identity of the peer of the call being served (None outside a call)."""
    return _PEER.get()


def peer_identity(context: grpc.aio.ServicerContext) -> tuple[Identity, str]:
    """(identity, serial) of the call's client certificate; IdentityError without one."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise IdentityError("the call presented no client certificate")
    return of_pem(bytes(pems[0]))


class CheckingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that runs `_check(method, context)` before each handler (which
    aborts the call to refuse it)."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap(handler, handler_call_details.method, self._check)

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        raise NotImplementedError


class AuthorizationInterceptor(CheckingInterceptor):
    """Allows each method only to the principals the policy names."""

    def __init__(self, table: Mapping[str, Mapping[str, frozenset[str]]] = policy.POLICY,
                 on_denied: OnDenied | None = None, is_revoked: IsRevoked | None = None
                 ) -> None:
        self.table = table
        self.on_denied = on_denied
        self.is_revoked = is_revoked

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        identity: Identity | None = None
        serial = ""
        try:
            identity, serial = peer_identity(context)
            reason = ""
            if not policy.allowed(method, identity.principal, self.table):
                callers = ", ".join(sorted(policy.callers_of(method, self.table))) or "nobody"
                reason = f"{identity} may not call {method} (allowed: {callers})"
            elif identity.kind != "service" and self.is_revoked is not None \
                    and await self.is_revoked(serial):
                reason = f"the certificate of {identity} was revoked"
        except IdentityError as exc:
            reason = str(exc)
        if reason:
            denial = Denial(method, identity, serial, reason, context.peer() or "")
            log.warning("permission denied: %s (peer %s)", reason, denial.peer_address)
            if self.on_denied is not None:
                try:
                    await self.on_denied(denial)
                except Exception:
                    log.exception("could not record the denial of %s", method)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        _PEER.set(identity)


Check = Callable[[str, grpc.aio.ServicerContext], Awaitable[None]]


def _wrap(handler: Any, method: str, check: Check) -> Any:
    """The same handler with `check` run before its behaviour."""
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(method, context)
            return await inner(request, context)

        factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                   else grpc.stream_unary_rpc_method_handler)
        return factory(unary_response, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)
    inner = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(method, context)
        result = inner(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result

    factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
               else grpc.stream_stream_rpc_method_handler)
    return factory(stream_response, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)
