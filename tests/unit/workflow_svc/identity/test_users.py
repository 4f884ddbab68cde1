"""Password hashing: argon2id for new hashes; legacy scrypt hashes verify and ask for a rehash."""

from __future__ import annotations

import base64
import hashlib

import pytest

from workflow_svc.identity.passwords import needs_rehash, scrypt_hash
from workflow_svc.identity.users import ROLES, hash_password, verify_password

FAST = {"n": 2**10, "r": 8, "p": 1}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_new_hashes_are_argon2id_phc_strings_with_random_salt() -> None:
    stored = hash_password("s3cret pass")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password("s3cret pass", stored) and not needs_rehash(stored)
    assert hash_password("same") != hash_password("same")


def test_legacy_scrypt_format_still_verifies_and_needs_rehash() -> None:
    stored = scrypt_hash("s3cret pass", **FAST)
    algo, n, r, p, salt, key = stored.split("$")
    assert (algo, n, r, p) == ("scrypt", "1024", "8", "1")
    expected = hashlib.scrypt(b"s3cret pass", salt=_unb64(salt), n=1024, r=8, p=1, dklen=32)
    assert _unb64(key) == expected
    assert verify_password("s3cret pass", stored) and needs_rehash(stored)
    assert not verify_password("s3cret pas", stored)


@pytest.mark.parametrize("make", [hash_password, lambda pw: scrypt_hash(pw, **FAST)])
def test_verify_accepts_right_and_rejects_wrong_passwords(make: object) -> None:
    stored = make("ünïcode ✓")  # type: ignore[operator]
    assert verify_password("ünïcode ✓", stored)
    for wrong in ("ünïcode", "", "ÜNÏCODE ✓", "ünïcode ✓ "):
        assert not verify_password(wrong, stored)


@pytest.mark.parametrize("stored", [
    "", "plain", "scrypt$1024$8$1$salt", "bcrypt$1024$8$1$c2FsdA$a2V5",
    "scrypt$x$8$1$c2FsdA$a2V5", "scrypt$1024$8$1$c2FsdA$", "scrypt$1023$8$1$c2FsdA$a2V5",
    f"scrypt${2**30}$8$1$c2FsdA$a2V5", "scrypt$1024$8$1$!!$a2V5", "$argon2id$v=19$garbage",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$",
])
def test_malformed_stored_hashes_never_match(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_tampered_hashes_do_not_verify() -> None:
    for stored in (scrypt_hash("pw", **FAST), hash_password("pw")):
        head, key = stored.rsplit("$", 1)
        flipped = key[:-2] + ("A" if key[-2] != "A" else "B") + key[-1]
        assert not verify_password("pw", f"{head}${flipped}")


def test_roles() -> None:
    assert set(ROLES) == {"radiologist", "admin", "auditor"}
