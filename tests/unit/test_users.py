"""Password hashing: scrypt with a random salt in the `scrypt$n$r$p$salt$hash` format."""

from __future__ import annotations

import base64
import hashlib

import pytest

from workflow_svc.users import ROLES, hash_password, verify_password

FAST = {"n": 2**10, "r": 8, "p": 1}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_hash_format_is_scrypt_with_parameters_salt_and_key() -> None:
    stored = hash_password("s3cret pass", **FAST)
    algo, n, r, p, salt, key = stored.split("$")
    assert (algo, n, r, p) == ("scrypt", "1024", "8", "1")
    assert len(_unb64(salt)) == 16
    expected = hashlib.scrypt(b"s3cret pass", salt=_unb64(salt), n=1024, r=8, p=1, dklen=32)
    assert _unb64(key) == expected


def test_default_cost_is_stored_and_verifies() -> None:
    stored = hash_password("pw")
    assert stored.startswith(f"scrypt${2**14}$8$1$")
    assert verify_password("pw", stored)


def test_salt_is_random_per_hash() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


def test_verify_accepts_right_and_rejects_wrong_passwords() -> None:
    stored = hash_password("ünïcode ✓", **FAST)
    assert verify_password("ünïcode ✓", stored)
    for wrong in ("ünïcode", "", "ÜNÏCODE ✓", "ünïcode ✓ "):
        assert not verify_password(wrong, stored)


@pytest.mark.parametrize("stored", [
    "", "plain", "scrypt$1024$8$1$salt", "bcrypt$1024$8$1$c2FsdA$a2V5",
    "scrypt$x$8$1$c2FsdA$a2V5", "scrypt$1024$8$1$c2FsdA$", "scrypt$1023$8$1$c2FsdA$a2V5",
    f"scrypt${2**30}$8$1$c2FsdA$a2V5", "scrypt$1024$8$1$!!$a2V5",
])
def test_malformed_stored_hashes_never_match(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_tampered_hash_does_not_verify() -> None:
    stored = hash_password("pw", **FAST)
    head, key = stored.rsplit("$", 1)
    flipped = key[:-2] + ("A" if key[-2] != "A" else "B") + key[-1]
    assert not verify_password("pw", f"{head}${flipped}")


def test_roles() -> None:
    assert set(ROLES) == {"radiologist", "admin", "auditor"}
