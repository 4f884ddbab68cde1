"""The authorization of a service that has the workflow store: refusals audited as
`security.permission_denied`, revoked operator and adapter certificates refused."""

from __future__ import annotations

import time

from sqlalchemy import select

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.authz import AuthorizationInterceptor, Denial
from sidecar_core.security.user_auth import user_authentication
from sidecar_core.serving.grpc_server import GrpcServer
from sidecar_core.settings import CommonSettings
from sidecar_core.store.models import MeshCredential

DENIED_EVENT = "security.permission_denied"


class RevokedSerials:
    """The serials of revoked certificates, re-read at most every `ttl_s` seconds."""

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._serials: frozenset[str] = frozenset()
        self._read_at = -1e9

    async def is_revoked(self, serial: str) -> bool:
        if time.monotonic() - self._read_at >= self.ttl_s:
            async with self.db.read() as s:
                rows = await s.scalars(select(MeshCredential.serial).where(
                    MeshCredential.revoked_at.is_not(None)))
                self._serials = frozenset(rows)
            self._read_at = time.monotonic()
        return serial in self._serials


def authorization(db: Database, topology: Topology, actor: str) -> AuthorizationInterceptor:
    """The policy table enforced, each refusal an audit event of `actor`."""

    async def on_denied(denial: Denial) -> None:
        who = denial.identity
        async with db.unit_of_work() as s:
            await audit.record(s, topology, DENIED_EVENT, actor, context={
                "method": denial.method, "reason": denial.reason[:300],
                "peer": denial.peer_address[:100],
                "identity": who.uri if who else "", "certificate_serial": denial.serial})

    return AuthorizationInterceptor(on_denied=on_denied,
                                    is_revoked=RevokedSerials(db).is_revoked)


def protected_server(settings: CommonSettings, service: str, address: str, db: Database,
                     topology: Topology, *, users: bool) -> GrpcServer:
    """The gRPC server of a service with the workflow store: mTLS with its own certificate, the
    method policy enforced (refusals audited as `<service>_svc`) and, where it serves users
    (`users`), their forwarded session tokens verified (`user_auth`)."""
    actor = f"{service}_svc"
    interceptors = [user_authentication(db, topology, actor, settings.token_key_set(),
                                        settings.revocation_cache_s)] if users else []
    return GrpcServer(address, settings.mesh_credentials(service),
                      authorization=authorization(db, topology, actor),
                      interceptors=interceptors, reflection=settings.grpc_reflection)
