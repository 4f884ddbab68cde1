"""The user's session token forwarded with every gRPC call the gateway makes for them.

`SessionAuth.principal` verifies the request's token and calls `forward(me)`; the client
interceptor on the gateway's workflow and ingest channels adds it to each call as
`authorization: Bearer <token>`, and the service called verifies it again itself (signature,
expiry, revocation) and takes the user's role and facilities from it. A call made outside a
request (the live-update loop) names its user with `acting_for`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from sidecar_core.security.mesh_tls import MeshCredentials
from sidecar_core.security.session_tokens import Principal

_TOKEN: contextvars.ContextVar[str] = contextvars.ContextVar("forwarded_user_token", default="")


def forward(me: Principal) -> None:
    """Calls made from now on in this request carry `me`'s token."""
    _TOKEN.set(me.token)


@contextmanager
def acting_for(me: Principal) -> Iterator[None]:
    """Calls made inside the block carry `me`'s token."""
    reset = _TOKEN.set(me.token)
    try:
        yield
    finally:
        _TOKEN.reset(reset)


def _details(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    token = _TOKEN.get()
    if not token:
        return details
    metadata = grpc.aio.Metadata(*[(k, v) for k, v in (details.metadata or ())
                                   if k != "authorization"])
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                      details.credentials, details.wait_for_ready)


class ForwardUserToken(grpc.aio.UnaryUnaryClientInterceptor,
                       grpc.aio.UnaryStreamClientInterceptor,
                       grpc.aio.StreamUnaryClientInterceptor):
    """Adds the token of the user being served to each call's metadata."""

    async def intercept_unary_unary(self, continuation: Callable[..., Awaitable[Any]],
                                    client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await continuation(_details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Callable[..., Awaitable[Any]],
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await continuation(_details(client_call_details), request)

    async def intercept_stream_unary(self, continuation: Callable[..., Awaitable[Any]],
                                     client_call_details: grpc.aio.ClientCallDetails,
                                     request_iterator: Any) -> Any:
        return await continuation(_details(client_call_details), request_iterator)


def channel(credentials: MeshCredentials, target: str) -> grpc.aio.Channel:
    """A channel to `target` presenting the gateway's certificate and forwarding user tokens."""
    return grpc.aio.secure_channel(target, credentials.channel_credentials(),
                                   interceptors=[ForwardUserToken()])
