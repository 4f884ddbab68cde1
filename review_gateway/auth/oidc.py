"""OpenID Connect sign-on at the hospital's identity provider: authorization code flow with
PKCE (S256), the ID token validated here, the account provisioned by the workflow service, and
the same session as a local login; logout ends the provider's session too (RP-initiated)."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth import oidc_tokens, tokens
from review_gateway.auth.oidc_tokens import ClaimMapping, IdTokenInvalid, UnknownKey
from review_gateway.auth.sessions import SessionAuth, new_session_id
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES, ApiError, ApiModel
from review_gateway.settings import GatewaySettings
from sidecar_core.egress import EgressPolicy, EgressRefused, pinned_client

log = logging.getLogger(__name__)

STATE_COOKIE = "sidecar_oidc"
ID_TOKEN_COOKIE = "sidecar_oidc_idt"
CALLBACK = "/api/v1/auth/oidc/callback"
STATE_TTL_S = 600
MAX_DOCUMENT = 512 * 1024
MAX_CODE = 4096


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered something unusable (an outage)."""


@dataclass(frozen=True)
class Discovery:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    algorithms: tuple[str, ...]


class Provider:
    """The provider's discovery document and keys, fetched through the egress policy and
    cached (discovery for SIDECAR_OIDC_DISCOVERY_CACHE_S, the JWKS until a token names a key
    it does not hold)."""

    def __init__(self, settings: GatewaySettings, egress: EgressPolicy) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.settings = settings
        self.egress = egress
        self._discovery: tuple[float, Discovery] | None = None
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = -1e9

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        timeout = self.settings.oidc_timeout_s
        try:
            destination = await self.egress.check_url(url)
            async with pinned_client(destination, timeout) as client:
                reply = await client.request(method, url, **kwargs)
        except EgressRefused as exc:
            raise ProviderUnavailable(f"{exc.destination} is refused by the egress policy: "
                                      f"{exc.message}") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{url.split('?')[0]} cannot be reached "
                                      f"({type(exc).__name__})") from None
        if len(reply.content) > MAX_DOCUMENT:
            raise ProviderUnavailable(f"{url} answered more than {MAX_DOCUMENT} bytes")
        return reply

    async def _json(self, url: str) -> dict[str, Any]:
        reply = await self._request("GET", url)
        if reply.status_code != 200:
            raise ProviderUnavailable(f"{url} answered HTTP {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            raise ProviderUnavailable(f"{url} did not answer JSON") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{url} did not answer a JSON object")
        return body

    async def discovery(self) -> Discovery:
        now = time.monotonic()
        if self._discovery and now - self._discovery[0] < self.settings.oidc_discovery_cache_s:
            return self._discovery[1]
        doc = await self._json(self.issuer + "/.well-known/openid-configuration")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise ProviderUnavailable("the discovery document names another issuer")
        try:
            found = Discovery(str(doc["authorization_endpoint"]), str(doc["token_endpoint"]),
                              str(doc["jwks_uri"]), str(doc.get("end_session_endpoint", "")),
                              tuple(str(a) for a in doc.get(
                                  "id_token_signing_alg_values_supported", ["RS256"])))
        except KeyError as exc:
            raise ProviderUnavailable(f"the discovery document lacks {exc}") from None
        self._discovery = (now, found)
        return found

    async def jwks(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        # A token naming an unknown key refreshes the keys, at most every 10 s.
        if self._jwks is None or (refresh and now - self._jwks_at > 10.0):
            self._jwks = await self._json((await self.discovery()).jwks_uri)
            self._jwks_at = now
        return self._jwks

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code (client_secret_basic)."""
        found = await self.discovery()
        reply = await self._request(
            "POST", found.token_endpoint,
            data={"grant_type": "authorization_code", "code": code,
                  "redirect_uri": redirect_uri, "code_verifier": verifier},
            auth=(self.settings.oidc_client_id, self.settings.oidc_secret()),
            headers={"Accept": "application/json"})
        if reply.status_code >= 500:
            raise ProviderUnavailable(f"the token endpoint answered HTTP {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            body = {}
        if reply.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise IdTokenInvalid("CODE_EXCHANGE_FAILED", "the provider refused the code "
                                 f"(HTTP {reply.status_code} {str(error)[:64]})")
        return body

    async def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        found = await self.discovery()
        kwargs: dict[str, Any] = {"issuer": self.issuer, "client_id":
                                  self.settings.oidc_client_id, "nonce": nonce,
                                  "algorithms": found.algorithms}
        try:
            return oidc_tokens.validate_id_token(id_token, await self.jwks(), **kwargs)
        except UnknownKey:
            return oidc_tokens.validate_id_token(id_token, await self.jwks(refresh=True),
                                                 **kwargs)


class _Sealer:
    """AES-GCM for the short-lived sign-in cookie (state, nonce, PKCE verifier), keyed from
    the client secret: every gateway replica of one deployment opens it."""

    def __init__(self, secret: str) -> None:
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=b"sidecar oidc sign-in cookie").derive(secret.encode())

    def seal(self, data: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.key).encrypt(nonce, json.dumps(data).encode(), STATE_COOKIE.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, text: str) -> dict[str, Any] | None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(AESGCM(self.key).decrypt(raw[:12], raw[12:],
                                                       STATE_COOKIE.encode()))
        except (ValueError, InvalidTag, UnicodeError):
            return None
        return data if isinstance(data, dict) else None


class OidcMethod(ApiModel):
    """The identity provider's sign-in, when one is configured."""

    name: str
    start_url: str
    available: bool
    message: str


class AuthMethods(ApiModel):
    """How one may sign in here: local accounts (break-glass) and/or the provider."""

    local: bool
    oidc: OidcMethod | None


class LogoutResult(ApiModel):
    """Where the browser goes next to end the provider's session too ('' for none)."""

    end_session_url: str


def _mapping(settings: GatewaySettings) -> ClaimMapping:
    return ClaimMapping(settings.oidc_role_claim, settings.oidc_role_map,
                        settings.oidc_facility_claim, settings.oidc_facility_map,
                        settings.oidc_username_claim)


def oidc_router(settings: GatewaySettings, sessions: SessionAuth,
                review: Callable[[], ReviewClient]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=ERROR_RESPONSES)
    configured = bool(settings.oidc_issuer and settings.oidc_client_id)
    provider = Provider(settings, settings.egress_policy()) if configured else None
    sealer = _Sealer(settings.oidc_secret()) if configured else None
    mapping = _mapping(settings)
    name = settings.oidc_display_name or "single sign-on"

    def redirect_uri(request: Request) -> str:
        return settings.oidc_redirect_uri or str(request.base_url).rstrip("/") + CALLBACK

    def to_login(reason: str) -> RedirectResponse:
        out = RedirectResponse("/?" + urlencode({"sso_error": reason}), status_code=303)
        out.delete_cookie(STATE_COOKIE, path="/api/v1/auth/oidc")
        return out

    async def refuse(request: Request, reason: str, claims: dict[str, Any] | None = None
                     ) -> RedirectResponse:
        """Audits the refusal (auth.login_failed, through the workflow service)."""
        claims = claims or {}
        client = review()
        try:
            await client.call(client.stub.SsoLogin, rpb.SsoLoginRequest(
                issuer=settings.oidc_issuer[:512], subject=str(claims.get("sub", ""))[:255],
                username=mapping.username(claims)[:64], refused_reason=reason,
                client_address=request.client.host if request.client else ""))
        except ApiError as exc:
            if exc.status >= 500:
                log.warning("SSO refusal %s not audited: %s", reason, exc.message)
        return to_login(reason)

    @router.get("/methods")
    async def methods() -> AuthMethods:
        """The sign-in methods of the login page (no session needed): local accounts unless
        switched off (SIDECAR_LOCAL_LOGIN=off), and the OpenID provider when configured, with
        whether it answers now."""
        oidc = None
        if provider is not None:
            message = ""
            try:
                await provider.discovery()
            except ProviderUnavailable as exc:
                message = str(exc)
            oidc = OidcMethod(name=name, start_url="/api/v1/auth/oidc/start",
                              available=not message, message=message)
        return AuthMethods(local=settings.local_login, oidc=oidc)

    @router.get("/oidc/start", response_class=RedirectResponse, status_code=302)
    async def start(request: Request) -> Response:
        """Sends the browser to the provider (code flow, PKCE S256, state and nonce bound to
        this browser in a sealed cookie); to the login page with `sso_error` when the provider
        is unavailable."""
        if provider is None or sealer is None:
            raise ApiError(404, "NOT_FOUND", "SSO_NOT_CONFIGURED",
                           "no OpenID provider is configured (SIDECAR_OIDC_ISSUER)")
        try:
            found = await provider.discovery()
        except ProviderUnavailable as exc:
            log.warning("OpenID provider unavailable: %s", exc)
            return to_login("PROVIDER_UNAVAILABLE")
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier, challenge = oidc_tokens.pkce_pair()
        query = urlencode({
            "response_type": "code", "client_id": settings.oidc_client_id,
            "redirect_uri": redirect_uri(request), "scope": settings.oidc_scopes,
            "state": state, "nonce": nonce, "code_challenge": challenge,
            "code_challenge_method": "S256"})
        sep = "&" if "?" in found.authorization_endpoint else "?"
        out = RedirectResponse(found.authorization_endpoint + sep + query, status_code=302)
        # Lax: the provider's redirect back is a cross-site top-level GET.
        out.set_cookie(STATE_COOKIE, sealer.seal({
            "state": state, "nonce": nonce, "verifier": verifier,
            "exp": time.time() + STATE_TTL_S}), max_age=STATE_TTL_S, path="/api/v1/auth/oidc",
            httponly=True, samesite="lax", secure=sessions.secure(request))
        return out

    @router.get("/oidc/callback", response_class=RedirectResponse, status_code=303)
    async def callback(request: Request, code: str = "", state: str = "", error: str = ""
                       ) -> Response:
        """The provider's redirect back: checks the state, exchanges the code, validates the
        ID token, maps its claims and starts the same session as a local login; failures go
        to the login page with `sso_error` (audited)."""
        if provider is None or sealer is None:
            raise ApiError(404, "NOT_FOUND", "SSO_NOT_CONFIGURED",
                           "no OpenID provider is configured (SIDECAR_OIDC_ISSUER)")
        if len(code) > MAX_CODE or len(state) > 256 or len(error) > 256:
            return await refuse(request, "INVALID_CALLBACK")
        held = sealer.open(request.cookies.get(STATE_COOKIE, ""))
        if held is None or float(held.get("exp", 0)) < time.time():
            return await refuse(request, "SIGN_IN_EXPIRED")
        if not state or not secrets.compare_digest(state, str(held.get("state", ""))):
            return await refuse(request, "STATE_MISMATCH")
        if error:
            return await refuse(request, "PROVIDER_DENIED" if error == "access_denied"
                                else "PROVIDER_ERROR")
        if not code:
            return await refuse(request, "INVALID_CALLBACK")
        try:
            answer = await provider.exchange(code, str(held["verifier"]), redirect_uri(request))
            id_token = answer.get("id_token")
            if not isinstance(id_token, str):
                raise IdTokenInvalid("INVALID_ID_TOKEN", "the provider sent no ID token")
            claims = await provider.validate(id_token, str(held["nonce"]))
        except ProviderUnavailable as exc:
            log.warning("OpenID provider unavailable: %s", exc)
            return to_login("PROVIDER_UNAVAILABLE")
        except IdTokenInvalid as exc:
            log.warning("SSO sign-in refused: %s (%s)", exc.reason, exc.message)
            return await refuse(request, exc.reason)
        client = review()
        session_id = new_session_id()
        try:
            user = await client.call(client.stub.SsoLogin, rpb.SsoLoginRequest(
                issuer=settings.oidc_issuer, subject=str(claims["sub"]),
                username=mapping.username(claims), role=mapping.role(claims),
                facilities=mapping.facilities(claims),
                client_address=request.client.host if request.client else "",
                session_id=session_id))
        except ApiError as exc:
            if exc.status >= 500:
                raise
            return to_login(exc.reason)
        out = RedirectResponse("/", status_code=303)
        sessions.start_session(request, out, user_id=user.user_id, username=user.username,
                               role=user.role, facilities=list(user.facilities),
                               session_id=session_id)
        out.delete_cookie(STATE_COOKIE, path="/api/v1/auth/oidc")
        out.set_cookie(ID_TOKEN_COOKIE, id_token, max_age=settings.token_ttl_s,
                       path="/api/v1/auth/oidc", httponly=True, samesite="strict",
                       secure=sessions.secure(request))
        return out

    @router.post("/oidc/logout")
    async def logout(request: Request, me: tokens.Principal = Depends(sessions.principal)
                     ) -> LogoutResult:
        """Ends this session (as POST /auth/logout) and, for a session that came from the
        provider, says where the browser ends the provider's session (RP-initiated logout
        with id_token_hint and post_logout_redirect_uri)."""
        await sessions.end_session(me)
        id_token = request.cookies.get(ID_TOKEN_COOKIE, "")
        url = ""
        if provider is not None and id_token:
            try:
                found = await provider.discovery()
            except ProviderUnavailable as exc:
                log.warning("OpenID provider unavailable at logout: %s", exc)
                found = None
            if found is not None and found.end_session_endpoint:
                sep = "&" if "?" in found.end_session_endpoint else "?"
                url = found.end_session_endpoint + sep + urlencode({
                    "id_token_hint": id_token, "client_id": settings.oidc_client_id,
                    "post_logout_redirect_uri": str(request.base_url)})
        out = sessions.logged_out(request, LogoutResult(end_session_url=url))
        out.delete_cookie(ID_TOKEN_COOKIE, path="/api/v1/auth/oidc", httponly=True,
                          samesite="strict", secure=sessions.secure(request))
        return out  # type: ignore[return-value]

    return router
