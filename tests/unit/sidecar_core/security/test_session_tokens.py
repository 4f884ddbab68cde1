"""Session tokens: explicit scope claims, key ids for rotation, kernel errors."""

from __future__ import annotations

import pytest

from sidecar_core.errors import Unauthenticated
from sidecar_core.security import session_tokens as st

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
