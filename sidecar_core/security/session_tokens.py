"""User session tokens: PyJWT, EdDSA (Ed25519) by default, with a key id per key (rotation),
expiry, jti, a CSRF claim and an explicit facility scope.

The gateway issues a token when a person logs in; it forwards it with every call made for that
person (`authorization: Bearer <token>` metadata), and the workflow and ingest services verify it
themselves (sidecar_core.security.user_auth). The scope is always explicit: `fac_all: true`
(admin and auditor) sees every facility, `fac` lists a radiologist's facilities, and a token
with neither sees nothing: an empty list never means "all".

Keys. By default the gateway signs with an Ed25519 private key (`DATA_DIR/token-signing.key`,
PKCS8 PEM, 0600, created on first use; or `SIDECAR_TOKEN_SIGNING_KEY`) and the workflow and
ingest services verify with its public key only (`DATA_DIR/token-signing.pub`, or
`SIDECAR_TOKEN_PUBLIC_KEYS`): a verifier cannot mint a token. An explicit `SIDECAR_TOKEN_SECRET`
still selects HS256, a shared secret (whoever verifies could also sign).

A key id (`kid`) names each key: the first 16 hex digits of the SHA-256 of the HMAC secret, or
of the public key's DER SubjectPublicKeyInfo. Verification picks the key by `kid` and requires
that key's algorithm: an HS256 token never verifies against a public key (HMAC keyed with the
public key's bytes, the classic algorithm confusion) and an EdDSA token never against a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sidecar_core.errors import Unauthenticated

HS256 = "HS256"
EDDSA = "EdDSA"
ALGORITHM = EDDSA  # the product's default
ROLES_SEEING_ALL = ("admin", "auditor")
ROLES = ("radiologist", "admin", "auditor")
# What a token is for (its `use` claim): a session (no claim), a one-time viewer hand-over code
# (60 s, exchanged once), or the viewer's DICOMweb token (read-only, one study, <= 10 min).
USE_SESSION = ""
USE_VIEWER_CODE = "viewer_code"
USE_VIEWER = "viewer"
_REQUIRED = ["exp", "iat", "sub", "jti"]
SECRET_FILE = "gateway-secret"
SIGNING_KEY_FILE = "token-signing.key"
PUBLIC_KEY_FILE = "token-signing.pub"
PREVIOUS_PUBLIC_KEYS_FILE = "token-signing.previous.pub"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)

SigningKey = bytes | Ed25519PrivateKey
VerifyingKey = bytes | Ed25519PublicKey


class TokenKeyError(ValueError):
    """The token keys are missing or unusable (raised at start, with what to configure)."""


# Why a session is refused after it was issued (revocation), as told to its holder.
ACCOUNT_MESSAGES = {
    "ACCOUNT_DISABLED": "this account is disabled; ask an administrator",
    "SESSIONS_REVOKED": "this session was revoked by an administrator; log in again",
    "TOKEN_REVOKED": "this session was logged out",
}


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
    use: str = USE_SESSION
    study: str = ""
    session_jti: str = ""
    issued_at: int = 0

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


def key_id(key: bytes | Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A key's id: the first 16 hex digits of the SHA-256 of an HMAC secret, or of a public
    key's DER SubjectPublicKeyInfo (a private key is named by its public key); it names the
    key and reveals nothing."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        key = key.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(key).hexdigest()[:16]


def algorithm_of(key: SigningKey | VerifyingKey) -> str:
    """The one algorithm a key is used with: HS256 for a secret, EdDSA for an Ed25519 key."""
    if isinstance(key, bytes):
        return HS256
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return EDDSA
    raise TokenKeyError(f"unsupported token key type {type(key).__name__}")


class KeySet:
    """The signing key (`current`; None for a process that only verifies) and every key that
    verifies (the current one's, previous ones, extra public keys), by key id, each with the
    one algorithm it is used with."""

    def __init__(self, current: SigningKey | None,
                 previous: Iterable[VerifyingKey] = ()) -> None:
        self.current = current
        self.current_kid = key_id(current) if current is not None else ""
        self.algorithm = algorithm_of(current) if current is not None else ""
        self.keys: dict[str, tuple[str, VerifyingKey]] = {}
        mine: list[VerifyingKey] = []
        if isinstance(current, Ed25519PrivateKey):
            mine.append(current.public_key())
        elif current is not None:
            mine.append(current)
        for key in (*previous, *mine):
            if isinstance(key, Ed25519PrivateKey):
                raise TokenKeyError("a private key is not a verification key")
            self.keys[key_id(key)] = (algorithm_of(key), key)
        if not self.keys:
            raise TokenKeyError("no session token key: a verifier needs at least one")

    @classmethod
    def verifier(cls, public_keys: Iterable[VerifyingKey]) -> KeySet:
        """Keys that only verify (a workflow or ingest service with the gateway's public key)."""
        return cls(None, public_keys)

    def lookup(self, kid: str) -> tuple[str, VerifyingKey]:
        """The algorithm and key of `kid`; INVALID_TOKEN for a key not accepted here."""
        entry = self.keys.get(kid)
        if entry is None:
            raise invalid("bearer token names an unknown key")
        return entry


def _keys(key: KeySet | SigningKey) -> KeySet:
    return key if isinstance(key, KeySet) else KeySet(key)


def issue(key: KeySet | SigningKey, *, user_id: str, username: str, role: str,
          facilities: Sequence[str], ttl_s: int, now: float | None = None,
          claims: dict[str, Any] | None = None) -> str:
    """A signed token valid for `ttl_s` seconds from `now`, with a fresh jti and CSRF value;
    its scope follows the role (`scope_claims`) unless `claims` says otherwise. The key set
    must hold a signing key (the gateway's); a verifier's raises TokenKeyError."""
    keys = _keys(key)
    if keys.current is None:
        raise TokenKeyError("these token keys only verify: the gateway's signing key issues")
    issued = int(time.time() if now is None else now)
    body = {"sub": user_id, "name": username, "role": role, **scope_claims(role, facilities),
            "iat": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex,
            "csrf": secrets.token_urlsafe(24), **(claims or {})}
    return jwt.encode(body, keys.current, algorithm=keys.algorithm,
                      headers={"kid": keys.current_kid})


def invalid(message: str) -> Unauthenticated:
    return Unauthenticated("INVALID_TOKEN", message)


def verify(key: KeySet | SigningKey, token: str, now: float | None = None) -> Principal:
    """The principal of a token; Unauthenticated INVALID_TOKEN or TOKEN_EXPIRED otherwise.
    The key is the one its `kid` names, and the token's `alg` must be that key's algorithm."""
    keys = _keys(key)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise invalid("bearer token is not a signed token") from None
    if header.get("alg") not in (HS256, EDDSA):
        raise invalid("bearer token uses an unsupported algorithm")
    algorithm, verifying_key = keys.lookup(str(header.get("kid", "")))
    if header.get("alg") != algorithm:
        raise invalid("bearer token's algorithm does not match its key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, verifying_key, algorithms=[algorithm],
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
            token=token, use=str(claims.get("use", USE_SESSION)),
            study=str(claims.get("study", "")), session_jti=str(claims.get("sid", "")),
            issued_at=int(claims["iat"]))
    except (ValueError, KeyError, TypeError):
        raise invalid("bearer token is malformed") from None
    if principal.expires_at <= (time.time() if now is None else now):
        raise Unauthenticated("TOKEN_EXPIRED", "bearer token has expired")
    return principal


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header (or gRPC metadata); MISSING_TOKEN
    without one. A token is never taken from a URL (the OHIF viewer gets a token of its own
    through the viewer hand-over)."""
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
    """HS256 keys (an explicit shared secret): the current key (`secret`, else
    DATA_DIR/gateway-secret, created 0600 on first use) and the previous ones still accepted
    (`previous` and the lines of DATA_DIR/gateway-secret.previous)."""
    keys = [p.encode() for p in previous]
    previous_file = data_dir / (SECRET_FILE + ".previous")
    if previous_file.exists():
        keys += [line.strip().encode() for line in previous_file.read_text().splitlines()
                 if line.strip()]
    current = secret.encode() if secret else load_or_create_secret(data_dir / SECRET_FILE)
    return KeySet(current, tuple(keys))


def load_signing_key_set(data_dir: Path, signing_key: Path | None = None,
                         public_keys: Sequence[Path] = (),
                         previous_secrets: Sequence[str] = ()) -> KeySet:
    """The gateway's EdDSA keys: it signs with `signing_key` (a PKCS8 PEM Ed25519 private key;
    default DATA_DIR/token-signing.key, created on first use with its .pub) and verifies with
    its public key plus `public_keys` (default DATA_DIR/token-signing.previous.pub, if any) and
    the HS256 `previous_secrets` still accepted during a move away from a shared secret."""
    if signing_key is not None:
        private = read_private_key(signing_key)
    else:
        private = load_or_create_signing_key(data_dir)
    accepted: list[VerifyingKey] = [s.encode() for s in previous_secrets]
    files = list(public_keys) or [data_dir / PREVIOUS_PUBLIC_KEYS_FILE]
    for path in files:
        if public_keys or path.exists():
            accepted += read_public_keys(path)
    return KeySet(private, accepted)


def load_verifier_key_set(data_dir: Path, public_keys: Sequence[Path] = (),
                          previous_secrets: Sequence[str] = ()) -> KeySet:
    """What the workflow and ingest services verify with: the public keys in `public_keys`
    (default DATA_DIR/token-signing.pub and DATA_DIR/token-signing.previous.pub), never a
    private key. TokenKeyError when there is none: a verifier without a key accepts nothing."""
    accepted: list[VerifyingKey] = [s.encode() for s in previous_secrets]
    if public_keys:
        for path in public_keys:
            accepted += read_public_keys(path)
    else:
        current = data_dir / PUBLIC_KEY_FILE
        if not current.exists():
            raise TokenKeyError(
                f"no public key to verify user session tokens: {current} does not exist. Set "
                "SIDECAR_TOKEN_PUBLIC_KEYS to the gateway's token-signing.pub (or run `sidecar "
                "tls init` / `sidecar up`, which create the key pair in the data dir), or set "
                "SIDECAR_TOKEN_SECRET for HS256")
        accepted += read_public_keys(current)
        previous_file = data_dir / PREVIOUS_PUBLIC_KEYS_FILE
        if previous_file.exists():
            accepted += read_public_keys(previous_file)
    return KeySet.verifier(accepted)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key of a PKCS8 PEM file (unencrypted); TokenKeyError otherwise."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenKeyError(f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TokenKeyError(f"{path}: the token signing key must be an Ed25519 key")
    return key


def read_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key of a PEM file (one or more `PUBLIC KEY` blocks); TokenKeyError
    for a missing file, one with none, another key type, or a private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenKeyError(f"{path}: cannot read the token public key ({exc})") from None
    keys: list[Ed25519PublicKey] = []
    for block in _PEM_BLOCK.finditer(data):
        if b"PRIVATE" in block.group(1):
            raise TokenKeyError(f"{path} holds a private key: give verifiers the public key "
                                "(token-signing.pub) only")
        try:
            key = serialization.load_pem_public_key(block.group(0))
        except ValueError as exc:
            raise TokenKeyError(f"{path}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise TokenKeyError(f"{path}: token public keys must be Ed25519 keys")
        keys.append(key)
    if not keys:
        raise TokenKeyError(f"{path} holds no PEM public key")
    return keys


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of a key (of its public half for a private key)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """DATA_DIR/token-signing.key, created atomically (0600) when it does not exist yet, and
    DATA_DIR/token-signing.pub written from it (when missing or not its public key)."""
    path = data_dir / SIGNING_KEY_FILE
    _create_private_file(path, lambda: Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key = read_private_key(path)
    pub = data_dir / PUBLIC_KEY_FILE
    pem = public_pem(key)
    if not pub.exists() or pub.read_bytes() != pem:
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".tmp-pub-")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, pub)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return key


def ensure_signing_key(data_dir: Path) -> str:
    """Creates the embedded token key pair when missing (`sidecar up`, `sidecar tls init`), so
    that the verifiers find DATA_DIR/token-signing.pub whatever starts first; its key id."""
    return key_id(load_or_create_signing_key(data_dir))


def _create_private_file(path: Path, content: Callable[[], bytes]) -> None:
    """Writes `content()` to `path` atomically (0600) unless it exists; another process that
    wins the race keeps its file. Tightens the mode of an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-secret-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content())
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def load_or_create_secret(path: Path) -> bytes:
    """Reads the secret at `path`, creating it atomically (0600) when it does not exist yet."""
    _create_private_file(path, lambda: secrets.token_urlsafe(48).encode())
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds a token secret shorter than 32 characters")
    return secret.encode()
