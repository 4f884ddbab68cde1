"""The user a call is made for, verified by the service called (not believed from the request).

The gateway forwards the session token of the person it serves as call metadata
(`authorization: Bearer <token>`). `UserAuthInterceptor` verifies its signature, expiry and
revocation before the servicer runs and exposes the user as `current_user()`; a method done for a
user without a valid token is UNAUTHENTICATED. The facility scope comes from the token alone
(`Principal.scope()`): `fac_all` for every facility, else the facilities listed, and nothing
for a token that names neither.

Methods not done for a user are listed in `NOT_FOR_A_USER` (logins, session checks, health, what
PACS adapters and the HL7 feed send); when the gateway calls, only `GATEWAY_NOT_FOR_A_USER`
(logins, session checks, health): everything else it does, STOW-RS included, is for a user.
The operator certificate (the `sidecar` CLI) acts as an explicit all-facilities admin without a
user token (`operator_user`).

The mesh authorization (authz.AuthorizationInterceptor) runs first: `current_peer()` is the
verified certificate here.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import grpc
from sqlalchemy import select

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import PermissionDenied, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import policy, session_tokens
from sidecar_core.security.authz import CheckingInterceptor, current_peer
from sidecar_core.security.identity import Identity
from sidecar_core.security.session_tokens import ACCOUNT_MESSAGES, KeySet, Principal
from sidecar_core.store.models import RevokedToken, User

log = logging.getLogger(__name__)

REJECTED_EVENT = "security.token_rejected"
_W = "sidecar.workflow.v1."
_I = "sidecar.ingest.v1."
# service full name → methods done for no user ("*": all of them).
NOT_FOR_A_USER: Mapping[str, frozenset[str]] = {
    "grpc.health.v1.Health": frozenset({"*"}),
    "grpc.reflection.v1alpha.ServerReflection": frozenset({"*"}),
    "grpc.reflection.v1.ServerReflection": frozenset({"*"}),
    "sidecar.normalizer.v1.NormalizerService": frozenset({"*"}),
    # How the gateway authenticates people: a password, and whether a session was logged out.
    _W + "ReviewService": frozenset({"Login", "CheckSession"}),
    # The RIS/HL7 feed and the operator's report import.
    _W + "ReportService": frozenset({"CompleteReport", "SubmitHl7Message"}),
    # What PACS adapters send; the facility comes from the adapter's certificate.
    _I + "IngestService": frozenset({"UploadInstances", "IngestInstances", "CompleteStudy"}),
}
# What a token that is not a session may be used for (its `use` claim): a viewer hand-over code
# only for its own redemption, the viewer's DICOMweb token only for DICOMweb reads.
USES: Mapping[str, frozenset[str]] = {
    session_tokens.USE_VIEWER_CODE: frozenset({f"/{_W}ReviewService/RedeemViewerCode"}),
    session_tokens.USE_VIEWER: frozenset(
        {f"/{_I}IngestService/{m}" for m in ("SearchStudies", "SearchSeries", "SearchInstances")}
        | {f"/{_I}RetrieveService/{m}"
           for m in ("ListStoredInstances", "GetSeriesIndex", "RenderFrame")}),
}
# Services only an all-facilities role may use (the gateway further tells reads from writes).
ROLES: Mapping[str, frozenset[str]] = {
    _W + "OperationsService": frozenset({"admin", "auditor"}),
    _W + "AnalyticsService": frozenset({"admin", "auditor"}),
    _W + "FacilityService": frozenset({"admin", "auditor"}),
    _W + "AccountService": frozenset({"admin", "auditor"}),
}

_USER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("mesh_user",
                                                                        default=None)


def current_user() -> Principal | None:
    """The verified user of the call being served (None for methods not done for a user)."""
    return _USER.get()


def require_user() -> Principal:
    """The verified user of this call; Unauthenticated when the method ran without one."""
    user = _USER.get()
    if user is None:
        raise Unauthenticated("MISSING_TOKEN", "this call is made for a user and needs their "
                              "session token (authorization: Bearer <token>)")
    return user


def operator_user(identity: Identity) -> Principal:
    """What the operator certificate acts as: an admin of every facility (explicitly)."""
    return Principal(user_id="", username=f"operator:{identity.name}", role="admin",
                     facilities=(), expires_at=0, all_facilities=True)


# What the gateway calls for no user: it authenticates people through these. Anything else the
# gateway calls (STOW-RS's IngestInstances included) is done for the user it serves.
GATEWAY_NOT_FOR_A_USER: Mapping[str, frozenset[str]] = {
    "grpc.health.v1.Health": frozenset({"*"}),
    # RecordPhiAccess: a batch of many users' requests, each with its own token, verified there.
    # SsoLogin: a sign-on the gateway verified at the OpenID provider (review_gateway/auth/oidc).
    _W + "ReviewService": frozenset({"Login", "SsoLogin", "CheckSession", "RecordPhiAccess"}),
}


def for_a_user(full_method: str, peer: Identity | None = None) -> bool:
    """Whether `full_method`, called by `peer`, is done for a user (and needs their token)."""
    service, method = policy.split_method(full_method)
    table = GATEWAY_NOT_FOR_A_USER if peer is not None and peer.principal == policy.GATEWAY \
        else NOT_FOR_A_USER
    exempt = table.get(service, frozenset())
    return not ("*" in exempt or method in exempt)


@dataclass(frozen=True)
class Rejection:
    """A refused user token: the method, why (an UPPER_SNAKE reason and a message) and the
    certificate that sent it (never the token)."""

    method: str
    reason: str
    message: str
    peer: str
    identity: str


OnRejected = Callable[[Rejection], Awaitable[None]]
IsRevoked = Callable[[str], Awaitable[bool]]
# Why the account lifecycle refuses a user's token (user id, issued at): '' when it does not.
AccountRefusal = Callable[[str, int], Awaitable[str]]


class UserAuthInterceptor(CheckingInterceptor):
    """Verifies the user token of every method done for a user; see the module docstring."""

    def __init__(self, keys: KeySet, is_revoked: IsRevoked,
                 on_rejected: OnRejected | None = None,
                 account: AccountRefusal | None = None) -> None:
        self.keys = keys
        self.is_revoked = is_revoked
        self.account = account
        self.on_rejected = on_rejected

    async def user_of(self, method: str, context: grpc.aio.ServicerContext
                           ) -> Principal | None:
        """The user of this call (None where the method is not done for one); raises
        Unauthenticated or PermissionDenied."""
        peer = current_peer()
        if not for_a_user(method, peer):
            return None
        if peer is not None and peer.kind == "operator":
            return operator_user(peer)
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode()
        user = session_tokens.verify(self.keys, session_tokens.bearer_token(header))
        if await self.is_revoked(user.jti) or (
                user.session_jti and await self.is_revoked(user.session_jti)):
            raise Unauthenticated("TOKEN_REVOKED", "this session was logged out")
        refused = await self.account(user.user_id, user.issued_at) if self.account else ""
        if refused:
            raise Unauthenticated(refused, ACCOUNT_MESSAGES[refused])
        if user.use and method not in USES.get(user.use, frozenset()):
            raise PermissionDenied("TOKEN_USE_NOT_ALLOWED",
                                   f"a {user.use} token may not call {method}")
        roles = ROLES.get(policy.split_method(method)[0])
        if roles is not None and user.role not in roles:
            raise PermissionDenied("ROLE_NOT_ALLOWED",
                                   f"{method} needs the role {' or '.join(sorted(roles))}")
        return user

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        try:
            user = await self.user_of(method, context)
        except (Unauthenticated, PermissionDenied) as exc:
            await self._reject(method, context, exc)
            return
        _USER.set(user)

    async def _reject(self, method: str, context: grpc.aio.ServicerContext,
                      exc: Unauthenticated | PermissionDenied) -> None:
        from sidecar_core.serving.grpc_server import rich_status  # it imports authz

        peer = current_peer()
        rejection = Rejection(method, exc.reason, exc.message, context.peer() or "",
                              peer.uri if peer else "")
        log.warning("user token refused for %s: %s (%s)", method, exc.reason, exc.message)
        if self.on_rejected is not None:
            try:
                await self.on_rejected(rejection)
            except Exception:
                log.exception("could not record the refusal of a user token for %s", method)
        code = getattr(grpc.StatusCode, exc.code)
        await context.abort(code, exc.message,
                            trailing_metadata=rich_status(code, exc.message, exc.reason, {}))


def account_refusal(disabled_at: datetime | None, sessions_revoked_at: datetime | None,
                    issued_at: int) -> str:
    """Why a user's session token issued at `issued_at` (epoch seconds) is refused by the
    account lifecycle: ACCOUNT_DISABLED, SESSIONS_REVOKED, or '' when it is not. A token's `iat`
    is whole seconds: one issued in the second of a revocation survives it (so that a login
    right after a password reset works)."""
    if disabled_at is not None:
        return "ACCOUNT_DISABLED"
    if sessions_revoked_at is not None and issued_at < int(sessions_revoked_at.timestamp()):
        return "SESSIONS_REVOKED"
    return ""


class RevokedTokens:
    """Whether a token id was revoked (logout): a revoked one is remembered until the process
    ends, one seen not revoked is trusted for `ttl_s` seconds."""

    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._revoked: set[str] = set()
        self._checked: dict[str, float] = {}
        self._accounts: dict[str, tuple[float, datetime | None, datetime | None]] = {}

    async def is_revoked(self, jti: str) -> bool:
        if jti in self._revoked:
            return True
        now = time.monotonic()
        if now - self._checked.get(jti, -1e9) < self.ttl_s:
            return False
        async with self.db.read() as s:
            found = await s.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti))
        if found is not None:
            if len(self._revoked) > 100_000:
                self._revoked.clear()
            self._revoked.add(jti)
            return True
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[jti] = now
        return False

    async def account(self, user_id: str, issued_at: int) -> str:
        """`account_refusal` of the user's current state, re-read at most every `ttl_s`."""
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            return ""
        now = time.monotonic()
        seen = self._accounts.get(user_id)
        if seen is None or now - seen[0] >= self.ttl_s:
            async with self.db.read() as s:
                row = (await s.execute(select(User.disabled_at, User.sessions_revoked_at)
                                       .where(User.id == uid))).one_or_none()
            if len(self._accounts) > 10_000:
                self._accounts.clear()
            seen = (now, row[0] if row else None, row[1] if row else None)
            self._accounts[user_id] = seen
        return account_refusal(seen[1], seen[2], issued_at)


def user_authentication(db: Database, topology: Topology, actor: str, keys: KeySet,
                        revocation_cache_s: float = 5.0) -> UserAuthInterceptor:
    """The interceptor of a service with the workflow store: revocations read from
    `revoked_tokens`, each refusal an audit event `security.token_rejected` of `actor` (its
    context names the method, the reason and the certificate, never the token)."""

    async def on_rejected(r: Rejection) -> None:
        async with db.unit_of_work() as s:
            await audit.record(s, topology, REJECTED_EVENT, actor, context={
                "method": r.method, "reason": r.reason, "message": r.message[:300],
                "peer": r.peer[:100], "identity": r.identity})

    revoked = RevokedTokens(db, revocation_cache_s)
    return UserAuthInterceptor(keys, revoked.is_revoked, on_rejected, revoked.account)
