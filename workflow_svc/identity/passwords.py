"""Password hashes: argon2id for new ones; legacy scrypt hashes still verify and are upgraded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import weakref

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024

# RFC 9106's second recommended option (argon2id, 64 MiB, t=3, p=4): argon2-cffi's default.
_HASHER = PasswordHasher(type=Type.ID)


# At most this many hashes are computed at once (each takes 64 MiB and a core for a while);
# more callers wait their turn (SIDECAR_PASSWORD_HASH_CONCURRENCY).
_CONCURRENCY = [2]
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


def set_concurrency(limit: int) -> None:
    """How many password hashes may be computed at once in this process (from the settings)."""
    if limit < 1:
        raise ValueError("the password hash concurrency must be at least 1")
    _CONCURRENCY[0] = limit
    _GATES.clear()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None:
        gate = _GATES[loop] = asyncio.Semaphore(_CONCURRENCY[0])
    return gate


async def hash_password_async(password: str) -> str:
    """hash_password in a worker thread, behind the concurrency gate."""
    async with _gate():
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    """verify_password in a worker thread, behind the concurrency gate."""
    async with _gate():
        return await asyncio.to_thread(verify_password, password, stored)


def hash_password(password: str) -> str:
    """An argon2id hash in PHC string form (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)."""
    return _HASHER.hash(password)


def needs_rehash(stored: str) -> bool:
    """True for a legacy scrypt hash or an argon2 hash made with other parameters."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored` (argon2id or legacy scrypt); a malformed stored
    hash never matches."""
    if stored.startswith("$argon2"):
        try:
            return _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError, ValueError):
            return False
    return _verify_scrypt(password, stored)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def scrypt_hash(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The legacy format `scrypt$n$r$p$salt$hash` (kept to verify and test old accounts)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES,
                         maxmem=_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        algo, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = _unb64(salt_s), _unb64(key_s)
        if algo != "scrypt" or not expected or n > 2**20 or r > 64 or p > 16:
            return False
        key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                             maxmem=_MAXMEM)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(key, expected)
