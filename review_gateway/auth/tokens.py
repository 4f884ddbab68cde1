"""The gateway's side of session tokens: the kernel's (sidecar_core.security.session_tokens),
with its Unauthenticated errors as HTTP 401 ApiErrors."""

from __future__ import annotations

from collections.abc import Sequence

from review_gateway.errors import ApiError
from sidecar_core.errors import Unauthenticated
from sidecar_core.security import session_tokens
from sidecar_core.security.session_tokens import (
    USE_SESSION,
    USE_VIEWER,
    USE_VIEWER_CODE,
    KeySet,
    Principal,
    issue,
    key_id,
)

__all__ = ["USE_SESSION", "USE_VIEWER", "USE_VIEWER_CODE", "KeySet", "Principal", "bearer_token",
           "issue", "key_id", "verify"]


def _api_error(exc: Unauthenticated) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", exc.reason, exc.message)


def verify(key: KeySet | bytes, token: str, now: float | None = None) -> Principal:
    """The principal of a token; ApiError 401 INVALID_TOKEN or TOKEN_EXPIRED otherwise."""
    try:
        return session_tokens.verify(key, token, now)
    except Unauthenticated as exc:
        raise _api_error(exc) from None


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header; 401 MISSING_TOKEN without one."""
    try:
        return session_tokens.bearer_token(authorization)
    except Unauthenticated as exc:
        raise _api_error(exc) from None


def require_scope(me: Principal) -> Sequence[str] | None:
    """The facilities `me` may see (None: every one, an explicit claim of the token); 403
    NO_FACILITY_SCOPE for a token that names none (it would see nothing)."""
    scope = me.scope()
    if scope is not None and not scope:
        raise ApiError(403, "PERMISSION_DENIED", "NO_FACILITY_SCOPE",
                       "this account is bound to no facility")
    return scope
