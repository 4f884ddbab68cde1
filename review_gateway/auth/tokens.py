"""Session tokens: PyJWT HS256 with a key id per key (rotation), expiry, jti and a CSRF claim."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from review_gateway.errors import ApiError

ALGORITHM = "HS256"
ROLES_SEEING_ALL = ("admin", "auditor")
_REQUIRED = ["exp", "iat", "sub", "jti"]


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    user_id: str
    username: str
    role: str
    facilities: tuple[str, ...]
    expires_at: int
    jti: str = ""
    csrf: str = ""
    via_cookie: bool = False

    def allowed_facilities(self) -> list[str]:
        """Facility scope for workflow queries: empty means all (admin and auditor only)."""
        if self.role in ROLES_SEEING_ALL:
            return []
        if self.role == "radiologist" and self.facilities:
            return list(self.facilities)
        raise ApiError(403, "PERMISSION_DENIED", "NO_FACILITY_SCOPE",
                       "this account is bound to no facility")


def key_id(key: bytes) -> str:
    """A key's id: the first 16 hex digits of its SHA-256 (names the key, reveals nothing)."""
    return hashlib.sha256(key).hexdigest()[:16]


class KeySet:
    """The signing key (current) and the keys still accepted (previous ones, by key id)."""

    def __init__(self, current: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self.current = current
        self.current_kid = key_id(current)
        self.keys = {key_id(k): k for k in (*previous, current)}

    def lookup(self, kid: str) -> bytes:
        key = self.keys.get(kid)
        if key is None:
            raise _invalid("bearer token names an unknown key")
        return key


def _keys(key: KeySet | bytes) -> KeySet:
    return key if isinstance(key, KeySet) else KeySet(key)


def issue(key: KeySet | bytes, *, user_id: str, username: str, role: str,
          facilities: list[str], ttl_s: int, now: float | None = None) -> str:
    """A signed token valid for `ttl_s` seconds from `now`, with a fresh jti and CSRF value."""
    keys = _keys(key)
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "name": username, "role": role, "fac": list(facilities),
              "iat": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex,
              "csrf": secrets.token_urlsafe(24)}
    return jwt.encode(claims, keys.current, algorithm=ALGORITHM,
                      headers={"kid": keys.current_kid})


def _invalid(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "INVALID_TOKEN", message)


def verify(key: KeySet | bytes, token: str, now: float | None = None) -> Principal:
    """The principal of a token; ApiError 401 INVALID_TOKEN or TOKEN_EXPIRED otherwise."""
    keys = _keys(key)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise _invalid("bearer token is not a signed token") from None
    if header.get("alg") != ALGORITHM:
        raise _invalid("bearer token uses an unsupported algorithm")
    signing_key = keys.lookup(str(header.get("kid", "")))
    try:
        claims: dict[str, Any] = jwt.decode(
            token, signing_key, algorithms=[ALGORITHM],
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise _invalid("bearer token signature does not verify") from None
    except jwt.InvalidTokenError:
        raise _invalid("bearer token is malformed") from None
    try:
        principal = Principal(
            user_id=str(claims["sub"]), username=str(claims.get("name", "")),
            role=str(claims["role"]), facilities=tuple(str(f) for f in claims.get("fac", [])),
            expires_at=int(claims["exp"]), jti=str(claims["jti"]),
            csrf=str(claims.get("csrf", "")))
    except (ValueError, KeyError, TypeError):
        raise _invalid("bearer token is malformed") from None
    if principal.expires_at <= (time.time() if now is None else now):
        raise ApiError(401, "UNAUTHENTICATED", "TOKEN_EXPIRED", "bearer token has expired")
    return principal


def bearer_token(authorization: str | None, query_token: str | None = None) -> str:
    """The token of an `Authorization: Bearer ...` header, else `query_token` (a DICOMweb
    viewer's `?token=` hand-over); 401 MISSING_TOKEN without either."""
    if not authorization and query_token:
        return query_token.strip()
    if not authorization:
        raise ApiError(401, "UNAUTHENTICATED", "MISSING_TOKEN",
                       "an Authorization: Bearer <token> header is required")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "UNAUTHENTICATED", "MISSING_TOKEN",
                       "the Authorization header must be 'Bearer <token>'")
    return token.strip()
