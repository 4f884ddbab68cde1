"""OpenID Connect without I/O: PKCE, the ID token's validation (signature, iss, aud, exp, iat,
nonce; never alg none) and the operator's mapping of claims to a role and facilities."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

# Asymmetric algorithms only: `none` and the HMAC ones (keyed by the client secret) are refused.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")
LEEWAY_S = 60
MAX_ID_TOKEN = 16 * 1024
# When the claims give several roles, the first of these wins.
ROLE_ORDER = ("admin", "radiologist", "auditor")


class IdTokenInvalid(Exception):
    """An ID token that must not sign anyone in; `reason` is UPPER_SNAKE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnknownKey(IdTokenInvalid):
    """Signed with a key id the provider's JWKS (as cached) does not hold."""


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def header_of(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS, unverified; IdTokenInvalid if it is not one."""
    if not token or len(token) > MAX_ID_TOKEN or token.count(".") != 2:
        raise IdTokenInvalid("INVALID_ID_TOKEN", "the ID token is not a signed JWT")
    try:
        return dict(jws.extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise IdTokenInvalid("INVALID_ID_TOKEN", f"the ID token is malformed ({exc})") from None


def validate_id_token(token: str, keys: Mapping[str, Any], *, issuer: str, client_id: str,
                      nonce: str, algorithms: Sequence[str] = ALGORITHMS,
                      now: float | None = None) -> dict[str, Any]:
    """The claims of a valid ID token (OpenID Connect Core 3.1.3.7); IdTokenInvalid otherwise,
    UnknownKey when its `kid` is not in `keys` (a JWKS document)."""
    header = header_of(token)
    alg = header.get("alg")
    allowed = [a for a in algorithms if a in ALGORITHMS]
    if not isinstance(alg, str) or alg not in allowed:
        raise IdTokenInvalid("ID_TOKEN_ALG_REFUSED",
                             f"the ID token's algorithm {alg!r} is not accepted")
    try:
        key_set = KeySet.import_key_set(dict(keys))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise IdTokenInvalid("PROVIDER_KEYS_INVALID", f"the provider's keys are unusable "
                             f"({exc})") from None
    kid = header.get("kid")
    candidates = [k for k in key_set.keys if kid is None or k.kid == kid]
    if not candidates:
        raise UnknownKey("ID_TOKEN_KEY_UNKNOWN", "the ID token is signed with an unknown key")
    claims: dict[str, Any] | None = None
    for key in candidates:
        try:
            claims = dict(jwt.decode(token, key, algorithms=[alg]).claims)
            break
        except JoseError:
            continue
    if claims is None:
        raise IdTokenInvalid("ID_TOKEN_SIGNATURE", "the ID token's signature does not verify")
    _check_claims(claims, issuer, client_id, nonce, time.time() if now is None else now)
    return claims


def _check_claims(claims: Mapping[str, Any], issuer: str, client_id: str, nonce: str,
                  now: float) -> None:
    def bad(reason: str, message: str) -> IdTokenInvalid:
        return IdTokenInvalid(reason, message)

    if claims.get("iss") != issuer:
        raise bad("ID_TOKEN_ISSUER", "the ID token was issued by another issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise bad("ID_TOKEN_AUDIENCE", "the ID token is not meant for this client")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise bad("ID_TOKEN_AUDIENCE", "the ID token's authorized party is another client")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise bad("ID_TOKEN_CLAIMS", "the ID token has no expiry")
    if now >= exp + LEEWAY_S:
        raise bad("ID_TOKEN_EXPIRED", "the ID token has expired")
    if not isinstance(iat, int | float) or isinstance(iat, bool) or iat > now + LEEWAY_S:
        raise bad("ID_TOKEN_CLAIMS", "the ID token's issue time is missing or in the future")
    if not nonce or not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
        raise bad("ID_TOKEN_NONCE", "the ID token's nonce is not this sign-in's")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise bad("ID_TOKEN_CLAIMS", "the ID token names no subject")


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _values(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)][:1000]
    return []


@dataclass(frozen=True)
class ClaimMapping:
    """How the operator's settings read a role and facilities out of the claims."""

    role_claim: str
    role_map: Mapping[str, str]
    facility_claim: str
    facility_map: Mapping[str, str]
    username_claim: str

    def role(self, claims: Mapping[str, Any]) -> str:
        """The role the claims give ('' for none)."""
        found = {self.role_map.get(v, v if not self.role_map else "")
                 for v in _values(claim_at(claims, self.role_claim))}
        return next((r for r in ROLE_ORDER if r in found), "")

    def facilities(self, claims: Mapping[str, Any]) -> list[str]:
        if not self.facility_claim:
            return []
        out: list[str] = []
        for value in _values(claim_at(claims, self.facility_claim)):
            name = self.facility_map.get(value, value if not self.facility_map else "")
            if name and name not in out:
                out.append(name)
        return out[:100]

    def username(self, claims: Mapping[str, Any]) -> str:
        value = claim_at(claims, self.username_claim)
        return value if isinstance(value, str) else ""
