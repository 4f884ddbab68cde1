"""The ID token's validation against forged tokens (wrong issuer, audience, nonce, expired,
alg none, unknown or wrong key), PKCE, and the mapping of claims to a role and facilities."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from review_gateway.auth import oidc_tokens as o

ISSUER = "https://idp.example.org/realms/hospital"
CLIENT = "sidecar-review"
NONCE = "n-0S6_WzA2Mj"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, another key
JWKS = {"keys": [KEY.as_dict(private=False)]}


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u-123", "exp": now + 300, "iat": now,
              "nonce": NONCE, "preferred_username": "dr.house"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: Any = KEY, alg: str = "RS256",
          kid: str | None = "k1") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, claims, key)


def _validate(token: str, **kw: Any) -> dict[str, Any]:
    return o.validate_id_token(token, kw.pop("keys", JWKS), issuer=ISSUER, client_id=CLIENT,
                               nonce=kw.pop("nonce", NONCE), **kw)


def _reason(token: str, **kw: Any) -> str:
    with pytest.raises(o.IdTokenInvalid) as caught:
        _validate(token, **kw)
    return caught.value.reason


def test_a_valid_token_gives_its_claims() -> None:
    claims = _validate(_sign(_claims()))
    assert claims["sub"] == "u-123" and claims["preferred_username"] == "dr.house"


def test_an_es256_token_of_a_listed_key_is_valid() -> None:
    ec = ECKey.generate_key("P-256", parameters={"kid": "e1"})
    keys = {"keys": [KEY.as_dict(private=False), ec.as_dict(private=False)]}
    assert _validate(_sign(_claims(), ec, "ES256", "e1"), keys=keys)["sub"] == "u-123"


@pytest.mark.parametrize(("over", "reason"), [
    ({"iss": "https://evil.example.org"}, "ID_TOKEN_ISSUER"),
    ({"iss": None}, "ID_TOKEN_ISSUER"),
    ({"aud": "another-client"}, "ID_TOKEN_AUDIENCE"),
    ({"aud": ["another-client", CLIENT]}, "ID_TOKEN_AUDIENCE"),  # several, no azp
    ({"aud": ["another-client", CLIENT], "azp": "another-client"}, "ID_TOKEN_AUDIENCE"),
    ({"nonce": "replayed-nonce"}, "ID_TOKEN_NONCE"),
    ({"nonce": None}, "ID_TOKEN_NONCE"),
    ({"exp": int(time.time()) - 3600}, "ID_TOKEN_EXPIRED"),
    ({"exp": None}, "ID_TOKEN_CLAIMS"),
    ({"iat": int(time.time()) + 3600}, "ID_TOKEN_CLAIMS"),
    ({"sub": None}, "ID_TOKEN_CLAIMS"),
])
def test_forged_claims_are_refused(over: dict[str, Any], reason: str) -> None:
    assert _reason(_sign(_claims(**over))) == reason


def test_several_audiences_with_azp_of_this_client_are_accepted() -> None:
    token = _sign(_claims(aud=["api", CLIENT], azp=CLIENT))
    assert _validate(token)["azp"] == CLIENT


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_alg_none_is_refused() -> None:
    token = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(_claims())}."
    assert _reason(token) == "ID_TOKEN_ALG_REFUSED"


def test_an_hmac_token_keyed_with_anything_is_refused() -> None:
    token = _sign(_claims(), OctKey.import_key("client-secret-as-hmac-key-0123456789"), "HS256")
    assert _reason(token) == "ID_TOKEN_ALG_REFUSED"


def test_an_algorithm_the_provider_does_not_list_is_refused() -> None:
    assert _reason(_sign(_claims()), algorithms=["ES256"]) == "ID_TOKEN_ALG_REFUSED"


def test_an_unknown_key_id_is_told_apart() -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k9"})
    with pytest.raises(o.UnknownKey):
        _validate(_sign(_claims(), stranger, kid="k9"))


def test_a_signature_of_another_key_under_a_known_kid_is_refused() -> None:
    assert _reason(_sign(_claims(), OTHER)) == "ID_TOKEN_SIGNATURE"


def test_a_tampered_payload_is_refused() -> None:
    head, _, sig = _sign(_claims()).split(".")
    forged = f"{head}.{_b64(_claims(sub='admin'))}.{sig}"
    assert _reason(forged) == "ID_TOKEN_SIGNATURE"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "x" * 20000])
def test_garbage_is_refused(token: str) -> None:
    assert _reason(token) == "INVALID_ID_TOKEN"


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = o.pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).decode().rstrip("=")


KEYCLOAK = o.ClaimMapping("realm_access.roles", {"sidecar-radiologist": "radiologist",
                                                  "sidecar-admin": "admin"},
                          "facility", {"HOSP-N": "north"}, "preferred_username")


def test_keycloak_style_claims_map_to_role_and_facilities() -> None:
    claims = {"realm_access": {"roles": ["offline_access", "sidecar-radiologist"]},
              "facility": ["HOSP-N", "HOSP-X"], "preferred_username": "dr.house"}
    assert KEYCLOAK.role(claims) == "radiologist"
    assert KEYCLOAK.facilities(claims) == ["north"]  # unmapped values give nothing
    assert KEYCLOAK.username(claims) == "dr.house"


def test_no_role_and_no_facility() -> None:
    claims = {"realm_access": {"roles": ["offline_access"]}, "preferred_username": "x"}
    assert KEYCLOAK.role(claims) == "" and KEYCLOAK.facilities(claims) == []
    assert KEYCLOAK.role({"realm_access": "not-a-dict"}) == ""


def test_without_a_map_the_values_are_the_names_and_admin_wins() -> None:
    entra = o.ClaimMapping("roles", {}, "facility", {}, "preferred_username")
    claims = {"roles": ["radiologist", "admin", "Something.Else"], "facility": "north"}
    assert entra.role(claims) == "admin"
    assert entra.facilities(claims) == ["north"]
    assert entra.role({"roles": ["Reader"]}) == ""
