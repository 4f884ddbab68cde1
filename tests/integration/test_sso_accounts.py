"""SSO accounts on a real PostgreSQL: provisioned just in time from the mapped claims, updated
at the next sign-on, bound to issuer and subject (a local account is never taken over), refused
when disabled or without a role, every outcome audited with the method."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from sidecar_core.errors import (
    AlreadyExists,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility
from workflow_svc.identity import accounts, sessions, sso, users

pytestmark = pytest.mark.integration

TOPOLOGY = Topology()
ISSUER = "https://idp.example.org/realms/hospital"


async def _events(db: Any, kind: str) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.execute(text("SELECT context FROM audit_events WHERE type = :t "
                                     "ORDER BY seq"), {"t": kind})).all()
    return [r[0] for r in rows]


async def _facilities(db: Any, *names: str) -> None:
    async with db.unit_of_work() as s:
        for name in names:
            s.add(Facility(id=uuid.uuid4(), name=name))


async def test_first_sign_on_provisions_and_the_next_updates(db: Any) -> None:
    await _facilities(db, "north", "south")
    user = await sso.login(db, TOPOLOGY, ISSUER, "sub-1", "dr.house", "radiologist",
                           ["south", "unknown", "north"], "10.0.0.7")
    assert (user.username, user.role, user.facilities) == ("dr.house", "radiologist",
                                                           ("north", "south"))
    [ok] = await _events(db, "auth.login_succeeded")
    assert (ok["method"], ok["issuer"], ok["subject"], ok["address"]) == (
        "oidc", ISSUER, "sub-1", "10.0.0.7")
    # No password ever opens an SSO account.
    with pytest.raises(Unauthenticated):
        await users.authenticate(db, "dr.house", sso.NO_PASSWORD)
    again = await sso.login(db, TOPOLOGY, ISSUER, "sub-1", "dr.house", "admin", [], "")
    assert (again.user_id, again.role, again.facilities) == (user.user_id, "admin", ())
    [account] = await accounts.list_accounts(db)
    assert (account.username, account.role) == ("dr.house", "admin")


async def test_a_radiologist_of_no_known_facility_signs_in_to_see_nothing(db: Any) -> None:
    user = await sso.login(db, TOPOLOGY, ISSUER, "sub-2", "nowhere", "radiologist",
                           ["elsewhere"])
    assert user.facilities == ()


async def test_no_role_is_refused_and_audited_without_an_account(db: Any) -> None:
    with pytest.raises(PermissionDenied) as refused:
        await sso.login(db, TOPOLOGY, ISSUER, "sub-3", "visitor", "", [], "10.0.0.8")
    assert refused.value.reason == "NO_ROLE"
    [failed] = await _events(db, "auth.login_failed")
    assert (failed["reason"], failed["method"], failed["subject"]) == ("NO_ROLE", "oidc",
                                                                       "sub-3")
    assert await accounts.list_accounts(db) == []


async def test_a_local_account_is_never_taken_over(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "ada", "a local password", "admin", None, "root",
                       via="cli")
    with pytest.raises(AlreadyExists) as taken:
        await sso.login(db, TOPOLOGY, ISSUER, "sub-4", "ada", "admin", [])
    assert taken.value.reason == "USERNAME_TAKEN"
    assert (await _events(db, "auth.login_failed"))[-1]["reason"] == "USERNAME_TAKEN"
    # The local account still logs in with its password, and only with it.
    assert (await sessions.login(db, TOPOLOGY, "ada", "a local password")).role == "admin"


async def test_a_disabled_sso_account_is_refused(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "ada", "a local password", "admin", None, "root",
                       via="cli")
    await sso.login(db, TOPOLOGY, ISSUER, "sub-5", "rad", "auditor", [])
    assert await accounts.set_disabled(db, TOPOLOGY, "rad", True, "ada", via="cli")
    with pytest.raises(PermissionDenied) as refused:
        await sso.login(db, TOPOLOGY, ISSUER, "sub-5", "rad", "auditor", [])
    assert refused.value.reason == "ACCOUNT_DISABLED"


async def test_a_refusal_by_the_gateway_is_audited(db: Any) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await sso.login(db, TOPOLOGY, ISSUER, "", "", "", [], "10.0.0.9",
                        refused="ID_TOKEN_NONCE")
    assert refused.value.reason == "ID_TOKEN_NONCE"
    [failed] = await _events(db, "auth.login_failed")
    assert (failed["reason"], failed["address"]) == ("ID_TOKEN_NONCE", "10.0.0.9")


@pytest.mark.parametrize(("issuer", "subject", "username", "role", "facilities", "reason"), [
    ("", "s", "u", "admin", [], "INVALID_ISSUER"),
    (ISSUER, "", "u", "admin", [], "INVALID_SUBJECT"),
    (ISSUER, "s", "has space", "admin", [], "INVALID_USERNAME"),
    (ISSUER, "s", "x" * 65, "admin", [], "INVALID_USERNAME"),
    (ISSUER, "s", "u", "superuser", [], "INVALID_ROLE"),
    (ISSUER, "s", "u", "radiologist", ["f"] * 101, "INVALID_FACILITIES"),
])
async def test_bad_input_is_refused_precisely(db: Any, issuer: str, subject: str,
                                              username: str, role: str,
                                              facilities: list[str], reason: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        await sso.login(db, TOPOLOGY, issuer, subject, username, role, facilities)
    assert bad.value.reason == reason
