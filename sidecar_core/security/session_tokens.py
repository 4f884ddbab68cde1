"""User session tokens: PyJWT HS256 with a key id per key (rotation), expiry, jti, a CSRF claim
and an explicit facility scope.

The gateway issues a token when a person logs in; it forwards it with every call made for that
person (`authorization: Bearer <token>` metadata), and the workflow and ingest services verify it
themselves (sidecar_core.security.user_auth). The scope is always explicit: `fac_all: true`
(admin and auditor) sees every facility, `fac` lists a radiologist's facilities, and a token
with neither sees nothing: an empty list never means "all".

The key is a shared secret (HMAC): whoever verifies tokens could also sign them. The workflow and
ingest services therefore hold the same secret as the gateway (CommonSettings.token_key_set).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from sidecar_core.errors import Unauthenticated

ALGORITHM = "HS256"
ROLES_SEEING_ALL = ("admin", "auditor")
ROLES = ("radiologist", "admin", "auditor")
_REQUIRED = ["exp", "iat", "sub", "jti"]
SECRET_FILE = "gateway-secret"


@dataclass(frozen=True)
class Principal:
    """The user a valid token names, with the facilities they may see."""

    user_id: str
    username: str
    role: str
    facilities: tuple[str, ...]
    expires_at: int
    jti: str = ""
    csrf: str = ""
    all_facilities: bool = False
    via_cookie: bool = False
    token: str = ""

    def scope(self) -> tuple[str, ...] | None:
        """None for every facility (an explicit `fac_all` claim), else the facilities listed;
        an empty tuple sees nothing."""
        return None if self.all_facilities else self.facilities

    def sees(self, facility: str) -> bool:
        return self.all_facilities or facility in self.facilities


def scope_claims(role: str, facilities: Sequence[str]) -> dict[str, Any]:
    """The scope a role gets: every facility for admin and auditor, else the listed ones."""
    if role in ROLES_SEEING_ALL:
        return {"fac_all": True, "fac": []}
    return {"fac": list(facilities)}


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
            raise invalid("bearer token names an unknown key")
        return key


def _keys(key: KeySet | bytes) -> KeySet:
    return key if isinstance(key, KeySet) else KeySet(key)


def issue(key: KeySet | bytes, *, user_id: str, username: str, role: str,
          facilities: Sequence[str], ttl_s: int, now: float | None = None,
          claims: dict[str, Any] | None = None) -> str:
    """A signed token valid for `ttl_s` seconds from `now`, with a fresh jti and CSRF value;
    its scope follows the role (`scope_claims`) unless `claims` says otherwise."""
    keys = _keys(key)
    issued = int(time.time() if now is None else now)
    body = {"sub": user_id, "name": username, "role": role, **scope_claims(role, facilities),
            "iat": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex,
            "csrf": secrets.token_urlsafe(24), **(claims or {})}
    return jwt.encode(body, keys.current, algorithm=ALGORITHM,
                      headers={"kid": keys.current_kid})


def invalid(message: str) -> Unauthenticated:
    return Unauthenticated("INVALID_TOKEN", message)


def verify(key: KeySet | bytes, token: str, now: float | None = None) -> Principal:
    """The principal of a token; Unauthenticated INVALID_TOKEN or TOKEN_EXPIRED otherwise."""
    keys = _keys(key)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise invalid("bearer token is not a signed token") from None
    if header.get("alg") != ALGORITHM:
        raise invalid("bearer token uses an unsupported algorithm")
    signing_key = keys.lookup(str(header.get("kid", "")))
    try:
        claims: dict[str, Any] = jwt.decode(
            token, signing_key, algorithms=[ALGORITHM],
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        raise invalid("bearer token signature does not verify") from None
    except jwt.InvalidTokenError:
        raise invalid("bearer token is malformed") from None
    try:
        facilities = claims.get("fac", [])
        if not isinstance(facilities, list):
            raise TypeError("fac must be a list")
        principal = Principal(
            user_id=str(claims["sub"]), username=str(claims.get("name", "")),
            role=str(claims["role"]), facilities=tuple(str(f) for f in facilities),
            expires_at=int(claims["exp"]), jti=str(claims["jti"]),
            csrf=str(claims.get("csrf", "")), all_facilities=claims.get("fac_all") is True,
            token=token)
    except (ValueError, KeyError, TypeError):
        raise invalid("bearer token is malformed") from None
    if principal.expires_at <= (time.time() if now is None else now):
        raise Unauthenticated("TOKEN_EXPIRED", "bearer token has expired")
    return principal


def bearer_token(authorization: str | None, query_token: str | None = None) -> str:
    """The token of an `Authorization: Bearer ...` header (or gRPC metadata), else
    `query_token` (a DICOMweb viewer's `?token=` hand-over); MISSING_TOKEN without either."""
    if not authorization and query_token:
        return query_token.strip()
    if not authorization:
        raise Unauthenticated("MISSING_TOKEN",
                              "an Authorization: Bearer <token> header is required")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("MISSING_TOKEN",
                              "the Authorization header must be 'Bearer <token>'")
    return token.strip()


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The gRPC call metadata that forwards a user's token to the service called."""
    return (("authorization", f"Bearer {token}"),)


def load_key_set(data_dir: Path, secret: str = "", previous: Sequence[str] = ()) -> KeySet:
    """The current key (`secret`, else DATA_DIR/gateway-secret, created 0600 on first use) and
    the previous ones still accepted (`previous` and the lines of DATA_DIR/gateway-secret.previous).
    """
    keys = [p.encode() for p in previous]
    previous_file = data_dir / (SECRET_FILE + ".previous")
    if previous_file.exists():
        keys += [line.strip().encode() for line in previous_file.read_text().splitlines()
                 if line.strip()]
    current = secret.encode() if secret else load_or_create_secret(data_dir / SECRET_FILE)
    return KeySet(current, tuple(keys))


def load_or_create_secret(path: Path) -> bytes:
    """Reads the secret at `path`, creating it atomically (0600) when it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-secret-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a token secret shorter than 32 characters")
    return secret.encode()
