"""Session tokens: explicit scope claims, key ids for rotation, kernel errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from review_gateway.settings import GatewaySettings
from sidecar_core.errors import Unauthenticated
from sidecar_core.security import session_tokens as st
from sidecar_core.settings import CommonSettings

KEY = b"k" * 40


def test_scope_is_explicit() -> None:
    admin = st.verify(KEY, st.issue(KEY, user_id="u", username="a", role="admin",
                                    facilities=["ignored"], ttl_s=60))
    assert admin.all_facilities and admin.scope() is None and admin.sees("any")
    rad = st.verify(KEY, st.issue(KEY, user_id="u", username="r", role="radiologist",
                                  facilities=["fac-a"], ttl_s=60))
    assert rad.scope() == ("fac-a",) and rad.sees("fac-a") and not rad.sees("fac-b")
    nobody = st.verify(KEY, st.issue(KEY, user_id="u", username="r", role="radiologist",
                                     facilities=[], ttl_s=60))
    assert nobody.scope() == () and not nobody.sees("fac-a")  # empty is nothing, not all
    unscoped_admin = st.verify(KEY, st.issue(KEY, user_id="u", username="a", role="admin",
                                             facilities=[], ttl_s=60,
                                             claims={"fac_all": False}))
    assert unscoped_admin.scope() == ()
    assert st.verify(KEY, st.issue(KEY, user_id="u", username="a", role="admin", facilities=[],
                                   ttl_s=60, claims={"fac_all": "yes"})).scope() == ()


def test_refusals_are_unauthenticated_with_a_reason() -> None:
    token = st.issue(KEY, user_id="u", username="r", role="radiologist", facilities=["a"],
                     ttl_s=60, now=1000)
    assert st.verify(KEY, token, now=1059).token == token
    with pytest.raises(Unauthenticated) as exc:
        st.verify(KEY, token, now=1060)
    assert exc.value.reason == "TOKEN_EXPIRED"
    for bad in (st.issue(b"x" * 40, user_id="u", username="r", role="admin", facilities=[],
                         ttl_s=60), "garbage", token[:-4] + "AAAA"):
        with pytest.raises(Unauthenticated) as exc:
            st.verify(KEY, bad, now=1000)
        assert exc.value.reason == "INVALID_TOKEN"
    with pytest.raises(Unauthenticated) as exc:
        st.bearer_token(None)
    assert exc.value.reason == "MISSING_TOKEN"
    assert st.bearer_token("Bearer abc") == "abc"
    assert st.metadata("abc") == (("authorization", "Bearer abc"),)


def test_previous_keys_still_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = b"o" * 40
    token = st.issue(old, user_id="u", username="r", role="admin", facilities=[], ttl_s=60)
    with pytest.raises(Unauthenticated):
        st.verify(st.KeySet(KEY), token)
    assert st.verify(st.KeySet(KEY, (old,)), token).role == "admin"
    keys = st.load_key_set(tmp_path)
    secret = tmp_path / st.SECRET_FILE
    assert secret.stat().st_mode & 0o777 == 0o600
    assert st.load_key_set(tmp_path).current == keys.current


def _ed_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_eddsa_tokens_verify_with_the_public_key_only() -> None:
    private = _ed_key()
    token = st.issue(private, user_id="u", username="r", role="radiologist",
                     facilities=["a"], ttl_s=60)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert jwt.get_unverified_header(token)["kid"] == st.key_id(private.public_key())
    verifier = st.KeySet.verifier([private.public_key()])
    assert st.verify(verifier, token).facilities == ("a",)
    with pytest.raises(st.TokenKeyError):  # a verifier cannot mint a token
        st.issue(verifier, user_id="u", username="a", role="admin", facilities=[], ttl_s=60)
    other = st.issue(_ed_key(), user_id="u", username="a", role="admin", facilities=[],
                     ttl_s=60)
    with pytest.raises(Unauthenticated) as exc:  # another key: unknown kid
        st.verify(verifier, other)
    assert exc.value.reason == "INVALID_TOKEN"
    forged = jwt.encode(jwt.decode(other, options={"verify_signature": False}), _ed_key(),
                        algorithm="EdDSA", headers={"kid": st.key_id(private)})
    with pytest.raises(Unauthenticated) as exc:  # right kid, wrong signature
        st.verify(verifier, forged)
    assert exc.value.reason == "INVALID_TOKEN"


def test_algorithm_confusion_is_refused_both_ways() -> None:
    private = _ed_key()
    public = private.public_key()
    verifier = st.KeySet.verifier([public])
    # HS256 keyed with the public key's PEM (or raw) bytes, naming the public key's kid
    for hmac_key in (st.public_pem(public), public.public_bytes_raw()):
        forged = _hs256(hmac_key, st.key_id(public))
        with pytest.raises(Unauthenticated) as exc:
            st.verify(verifier, forged)
        assert exc.value.reason == "INVALID_TOKEN"
    # an EdDSA token never verifies against an HMAC secret, even naming the secret's kid
    eddsa = jwt.encode({"sub": "u", "role": "admin", "iat": 1, "exp": int(time.time()) + 60,
                        "jti": "j"}, private, algorithm="EdDSA",
                       headers={"kid": st.key_id(KEY)})
    with pytest.raises(Unauthenticated) as exc:
        st.verify(st.KeySet(KEY, (public,)), eddsa)
    assert exc.value.reason == "INVALID_TOKEN"
    # "none" and other algorithms are refused outright
    unsigned = jwt.encode({"sub": "u", "role": "admin", "iat": 1, "exp": 2**31, "jti": "j"},
                          None, algorithm="none", headers={"kid": st.key_id(public)})
    with pytest.raises(Unauthenticated):
        st.verify(verifier, unsigned)


def _hs256(key: bytes, kid: str) -> str:
    """An HS256 token signed with `key` (by hand: PyJWT refuses PEM-looking HMAC keys)."""
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps({"sub": "u", "role": "admin", "fac_all": True, "iat": 1,
                           "exp": int(time.time()) + 60, "jti": "j"}).encode())
    signature = hmac.new(key, header + b"." + body, hashlib.sha256).digest()
    return (header + b"." + body + b"." + b64(signature)).decode()


def test_rotation_keeps_a_previous_public_key(tmp_path: Path) -> None:
    old, new = _ed_key(), _ed_key()
    token = st.issue(old, user_id="u", username="r", role="admin", facilities=[], ttl_s=60)
    with pytest.raises(Unauthenticated):
        st.verify(st.KeySet(new), token)
    assert st.verify(st.KeySet(new, (old.public_key(),)), token).role == "admin"
    # the embedded files: the verifier reads token-signing.pub and token-signing.previous.pub
    keys = st.load_signing_key_set(tmp_path)
    assert (tmp_path / st.SIGNING_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert st.load_signing_key_set(tmp_path).current_kid == keys.current_kid
    (tmp_path / st.PREVIOUS_PUBLIC_KEYS_FILE).write_bytes(st.public_pem(old))
    verifier = st.load_verifier_key_set(tmp_path)
    assert verifier.current is None and set(verifier.keys) == {keys.current_kid, st.key_id(old)}
    assert st.verify(verifier, token).role == "admin"
    assert st.verify(verifier, st.issue(keys, user_id="u", username="a", role="admin",
                                        facilities=[], ttl_s=60)).role == "admin"
    # explicit files (SIDECAR_TOKEN_PUBLIC_KEYS): one file may hold several PEMs
    both = tmp_path / "both.pub"
    both.write_bytes(st.public_pem(new) + st.public_pem(old))
    assert set(st.load_verifier_key_set(tmp_path / "none", [both]).keys) == {
        st.key_id(new), st.key_id(old)}


def test_a_verifier_without_a_key_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(st.TokenKeyError, match="SIDECAR_TOKEN_PUBLIC_KEYS"):
        st.load_verifier_key_set(tmp_path)
    with pytest.raises(st.TokenKeyError):
        st.KeySet.verifier([])
    with pytest.raises(st.TokenKeyError):
        CommonSettings(data_dir=tmp_path).token_key_set()
    with pytest.raises(st.TokenKeyError, match="cannot read"):
        st.load_verifier_key_set(tmp_path, [tmp_path / "missing.pub"])
    st.ensure_signing_key(tmp_path)
    with pytest.raises(st.TokenKeyError, match="private key"):  # never the private key
        st.load_verifier_key_set(tmp_path, [tmp_path / st.SIGNING_KEY_FILE])
    assert CommonSettings(data_dir=tmp_path).token_key_set().current is None
    # an explicit secret still selects HS256 (both sides hold it)
    hs = CommonSettings(data_dir=tmp_path, token_secret="s" * 40).token_key_set()
    assert hs.algorithm == "HS256"


def test_the_gateway_signs_with_its_configured_key(tmp_path: Path) -> None:
    pem = _ed_key().private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    (tmp_path / "signing.key").write_bytes(pem)
    settings = GatewaySettings(data_dir=tmp_path / "data",
                               token_signing_key=tmp_path / "signing.key")
    keys = settings.key_set()
    assert keys.algorithm == "EdDSA"
    assert not (tmp_path / "data" / st.SIGNING_KEY_FILE).exists()  # nothing generated
    (tmp_path / "gateway.pub").write_bytes(st.public_pem(st.read_private_key(
        tmp_path / "signing.key")))
    verifier = CommonSettings(data_dir=tmp_path / "other",
                              token_public_keys=str(tmp_path / "gateway.pub")).token_key_set()
    assert st.verify(verifier, st.issue(keys, user_id="u", username="a", role="admin",
                                        facilities=[], ttl_s=60)).all_facilities
    (tmp_path / "rsa.key").write_text("not a key")
    with pytest.raises(st.TokenKeyError):
        GatewaySettings(data_dir=tmp_path, token_signing_key=tmp_path / "rsa.key").key_set()
