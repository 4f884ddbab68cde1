"""Sessions: login (cookie + bearer), logout that revokes, /me, and the principal dependency."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth import forwarding, tokens
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES, ApiError, ApiModel
from review_gateway.settings import GatewaySettings
from review_gateway.web import access_audit
from sidecar_core.security.session_tokens import ACCOUNT_MESSAGES

SESSION_COOKIE = "sidecar_session"
CSRF_COOKIE = "sidecar_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Declares bearer auth in the OpenAPI document; the header itself is checked below.
bearer_scheme = HTTPBearer(auto_error=False, description="token from POST /api/v1/auth/login")


def new_session_id() -> str:
    """The id (jti) of a session about to start: given to the login call first, so that
    `auth.login_succeeded` and every access event of the session carry the same id."""
    return uuid.uuid4().hex


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResult(ApiModel):
    """A new session: the bearer token (also set as the HttpOnly session cookie) and the CSRF
    token that cookie writes send in X-CSRF-Token."""

    access_token: str
    token_type: str
    expires_in: int
    role: str
    username: str
    facilities: list[str]
    csrf_token: str


class Me(ApiModel):
    username: str
    role: str
    facilities: list[str]


class SessionAuth:
    """Verifies a request's session (bearer header, else cookie + CSRF on writes) and revocation."""

    def __init__(self, settings: GatewaySettings, review: Callable[[], ReviewClient]) -> None:
        self.settings = settings
        self.keys = settings.key_set()
        self.review = review
        self._revoked: dict[str, float] = {}  # jti → expiry (revoked here or seen revoked)
        self._checked: dict[str, float] = {}  # jti → when it was last seen not revoked

    async def check_revoked(self, me: tokens.Principal) -> None:
        """401 TOKEN_REVOKED when the session was logged out (cached briefly when it was not)."""
        now = time.monotonic()
        jti = me.session_jti or me.jti
        if jti in self._revoked:
            raise ApiError(401, "UNAUTHENTICATED", "TOKEN_REVOKED", "this session was logged out")
        if now - self._checked.get(jti, -1e9) < self.settings.revocation_cache_s:
            return
        client = self.review()
        reply = await client.call(client.stub.CheckSession, rpb.CheckSessionRequest(
            jti=jti, user_id=me.user_id, issued_at=me.issued_at))
        if reply.revoked:
            reason = reply.reason or "TOKEN_REVOKED"
            if reason == "TOKEN_REVOKED":  # a logout is final; an account may be enabled again
                self._revoked[jti] = me.expires_at
            self._checked.pop(jti, None)
            raise ApiError(401, "UNAUTHENTICATED", reason,
                           ACCOUNT_MESSAGES.get(reason, "this session was revoked"))
        if len(self._checked) > 10000:
            self._checked.clear()
        self._checked[jti] = now

    async def _verified(self, request: Request) -> tokens.Principal:
        me = await self._verify(request)
        request.scope[access_audit.PRINCIPAL_KEY] = me  # who it was, for the access audit
        return me

    async def _verify(self, request: Request) -> tokens.Principal:
        header = request.headers.get("Authorization")
        cookie = request.cookies.get(SESSION_COOKIE)
        if header or not cookie:
            # No ?token= in URLs: the OHIF viewer gets its own token through the hand-over.
            me = tokens.verify(self.keys, tokens.bearer_token(header))
        else:
            me = tokens.verify(self.keys, cookie)
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not me.csrf or not hmac.compare_digest(sent, me.csrf):
                    raise ApiError(403, "PERMISSION_DENIED", "CSRF_FAILED",
                                   f"a write with the session cookie needs the {CSRF_HEADER} "
                                   "header of this session")
            me = tokens.Principal(**{**me.__dict__, "via_cookie": True})
        return me

    async def _accept(self, me: tokens.Principal) -> tokens.Principal:
        # A viewer token lives as long as its session: logging out ends it too.
        await self.check_revoked(me)
        forwarding.forward(me)  # the services called for this request verify it themselves
        return me

    async def principal(self, request: Request, _: Any = Depends(bearer_scheme)
                        ) -> tokens.Principal:
        """The verified caller; 401 without a valid session, 403 CSRF_FAILED on a cookie write
        without the session's CSRF token, 403 TOKEN_USE_NOT_ALLOWED for a token that is not a
        session's (a viewer hand-over code or the viewer's DICOMweb token)."""
        me = await self._verified(request)
        if me.use != tokens.USE_SESSION:
            raise ApiError(403, "PERMISSION_DENIED", "TOKEN_USE_NOT_ALLOWED",
                           "this token is not a session token")
        return await self._accept(me)

    async def dicomweb_principal(self, request: Request, _: Any = Depends(bearer_scheme)
                                 ) -> tokens.Principal:
        """`principal`, or the OHIF viewer's DICOMweb token: reads only (403
        VIEWER_TOKEN_READ_ONLY otherwise), of its one study (403 VIEWER_TOKEN_OTHER_STUDY for
        a path naming another; study-level QIDO is narrowed to it by the router, series and
        instance QIDO without a study are refused)."""
        me = await self._verified(request)
        if me.use == tokens.USE_SESSION:
            return await self._accept(me)
        if me.use != tokens.USE_VIEWER:
            raise ApiError(403, "PERMISSION_DENIED", "TOKEN_USE_NOT_ALLOWED",
                           "this token is not for DICOMweb")
        if request.method not in SAFE_METHODS:
            raise ApiError(403, "PERMISSION_DENIED", "VIEWER_TOKEN_READ_ONLY",
                           "the viewer's token reads; it cannot store or change anything")
        parts = request.url.path.split("/")  # '', 'dicomweb', 'studies', UID, ...
        if len(parts) < 3 or parts[1] != "dicomweb" or parts[2] != "studies":
            raise ApiError(403, "PERMISSION_DENIED", "VIEWER_TOKEN_OTHER_STUDY",
                           "the viewer's token reads its one study only")
        if len(parts) > 3 and parts[3] and parts[3] != me.study:
            raise ApiError(403, "PERMISSION_DENIED", "VIEWER_TOKEN_OTHER_STUDY",
                           "the viewer's token reads its one study only")
        return await self._accept(me)

    def secure(self, request: Request) -> bool:
        if self.settings.cookie_secure is not None:
            return self.settings.cookie_secure
        # The scheme is the connection's, or X-Forwarded-Proto from a trusted proxy (uvicorn).
        return self.settings.https or request.url.scheme == "https"

    def start_session(self, request: Request, response: Response, *, user_id: str,
                      username: str, role: str, facilities: list[str], session_id: str
                      ) -> tuple[str, tokens.Principal]:
        """Issues a session token (local login and SSO alike) with the id `session_id` (the
        one `new_session_id` gave the login call, which audits it) and sets its cookies."""
        ttl = self.settings.token_ttl_s
        token = tokens.issue(self.keys, user_id=user_id, username=username, role=role,
                             facilities=facilities, ttl_s=ttl, claims={"jti": session_id})
        me = tokens.verify(self.keys, token)
        secure = self.secure(request)
        response.set_cookie(SESSION_COOKIE, token, max_age=ttl, path="/", httponly=True,
                            samesite="strict", secure=secure)
        response.set_cookie(CSRF_COOKIE, me.csrf, max_age=ttl, path="/", httponly=False,
                            samesite="strict", secure=secure)
        return token, me

    async def end_session(self, me: tokens.Principal) -> None:
        """Revokes the session at the workflow service (and here at once)."""
        client = self.review()
        revoke = rpb.RevokeSessionRequest(jti=me.jti)
        revoke.expires_at.FromDatetime(datetime.fromtimestamp(me.expires_at, UTC))
        await client.call(client.stub.RevokeSession, revoke)
        now = time.time()
        for jti in [j for j, exp in self._revoked.items() if exp <= now]:
            del self._revoked[jti]  # expired tokens are refused anyway
        self._revoked[me.jti] = me.expires_at

    def logged_out(self, request: Request, body: BaseModel | None) -> Response:
        """204, or 200 with `body`, that deletes the session's cookies."""
        response: Response = Response(status_code=204) if body is None else JSONResponse(
            body.model_dump(mode="json"))
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.delete_cookie(name, path="/", secure=self.secure(request),
                                   httponly=name == SESSION_COOKIE, samesite="strict")
        return response

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/api/v1", tags=["auth"], responses=ERROR_RESPONSES)

        @router.post("/auth/login")
        async def login(body: LoginRequest, request: Request, response: Response
                        ) -> LoginResult:
            if not self.settings.local_login:
                raise ApiError(403, "PERMISSION_DENIED", "LOCAL_LOGIN_DISABLED",
                               "local accounts are switched off here (SIDECAR_LOCAL_LOGIN=off); "
                               "sign in with the hospital's identity provider")
            client = self.review()
            # The peer, or X-Forwarded-For from a trusted proxy (SIDECAR_TRUSTED_PROXIES): what
            # the login rate limit counts and the audit records.
            address = request.client.host if request.client else ""
            session_id = new_session_id()
            user = await client.call(client.stub.Login, rpb.LoginRequest(
                username=body.username, password=body.password, client_address=address,
                session_id=session_id))
            token, me = self.start_session(request, response, user_id=user.user_id,
                                           username=user.username, role=user.role,
                                           facilities=list(user.facilities),
                                           session_id=session_id)
            return LoginResult(access_token=token, token_type="bearer",
                               expires_in=self.settings.token_ttl_s, role=user.role,
                               username=user.username, facilities=list(user.facilities),
                               csrf_token=me.csrf)

        @router.post("/auth/logout", status_code=204, response_class=Response)
        async def logout(request: Request,
                         me: tokens.Principal = Depends(self.principal)) -> Response:
            await self.end_session(me)
            return self.logged_out(request, None)

        @router.get("/me")
        async def whoami(me: tokens.Principal = Depends(self.principal)) -> Me:
            return Me(username=me.username, role=me.role, facilities=list(me.facilities))

        return router
