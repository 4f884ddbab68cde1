"""HMAC-SHA256 signed bearer tokens (JWT compact form, HS256, standard library only)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from review_gateway.errors import ApiError

_HEADER = {"alg": "HS256", "typ": "JWT"}
ROLES_SEEING_ALL = ("admin", "auditor")


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    user_id: str
    username: str
    role: str
    facilities: tuple[str, ...]
    expires_at: int

    def allowed_facilities(self) -> list[str]:
        """Facility scope for workflow queries: empty means all (admin and auditor only)."""
        if self.role in ROLES_SEEING_ALL:
            return []
        if self.role == "radiologist" and self.facilities:
            return list(self.facilities)
        raise ApiError(403, "PERMISSION_DENIED", "NO_FACILITY_SCOPE",
                       "this account is bound to no facility")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, signing_input: str) -> str:
    return _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def issue(key: bytes, *, user_id: str, username: str, role: str, facilities: list[str],
          ttl_s: int, now: float | None = None) -> str:
    """A signed token valid for `ttl_s` seconds from `now`."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "name": username, "role": role, "fac": list(facilities),
              "iat": issued, "exp": issued + ttl_s}
    signing_input = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode())
                             for part in (_HEADER, claims))
    return f"{signing_input}.{_sign(key, signing_input)}"


def _invalid(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "INVALID_TOKEN", message)


def verify(key: bytes, token: str, now: float | None = None) -> Principal:
    """The principal of a token; ApiError 401 INVALID_TOKEN or TOKEN_EXPIRED otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _invalid("bearer token is not a signed token")
    header_b64, claims_b64, signature = parts
    if not hmac.compare_digest(_sign(key, f"{header_b64}.{claims_b64}"), signature):
        raise _invalid("bearer token signature does not verify")
    try:
        header = json.loads(_unb64(header_b64))
        claims: dict[str, Any] = json.loads(_unb64(claims_b64))
        principal = Principal(
            user_id=str(claims["sub"]), username=str(claims.get("name", "")),
            role=str(claims["role"]), facilities=tuple(str(f) for f in claims.get("fac", [])),
            expires_at=int(claims["exp"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _invalid("bearer token is malformed") from None
    if header != _HEADER:
        raise _invalid("bearer token uses an unsupported algorithm")
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
