"""The account lifecycle on a real PostgreSQL: disable, enable, revoke sessions and reset a
password, each audited with the operator and the door; the checks that refuse the sessions."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from sidecar_core.errors import FailedPrecondition, NotFound, PermissionDenied, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.user_auth import RevokedTokens
from workflow_svc.identity import accounts, sessions, users

pytestmark = pytest.mark.integration

TOPOLOGY = Topology()
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse, another staple"


async def _events(db: Any, kind: str) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.execute(text("SELECT actor, context FROM audit_events WHERE type = :t "
                                     "ORDER BY seq"), {"t": kind})).all()
    return [{"actor": r[0], **r[1]} for r in rows]


async def test_add_is_audited_and_listed(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "ada", PASSWORD, "admin", None, "root", via="cli")
    [event] = await _events(db, "user.created")
    assert event["actor"] == "operator:root"
    assert (event["username"], event["operator"], event["via"], event["role"]) == (
        "ada", "root", "cli", "admin")
    assert "password" not in str(event).lower()
    [account] = await accounts.list_accounts(db)
    assert (account.username, account.role, account.status) == ("ada", "admin", "enabled")


async def test_disable_refuses_login_and_sessions_then_enable(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "ada", PASSWORD, "admin", None, "root", via="cli")
    await accounts.add(db, TOPOLOGY, "rad", PASSWORD, "auditor", None, "root", via="cli")
    user = await sessions.login(db, TOPOLOGY, "rad", PASSWORD, "127.0.0.1")
    issued = int(time.time())
    assert await sessions.is_revoked(db, "jti-1", str(user.user_id), issued) == ""

    assert await accounts.set_disabled(db, TOPOLOGY, "rad", True, "ada", via="api")
    assert not await accounts.set_disabled(db, TOPOLOGY, "rad", True, "ada", via="api")
    with pytest.raises(PermissionDenied) as refused:
        await sessions.login(db, TOPOLOGY, "rad", PASSWORD, "127.0.0.1")
    assert refused.value.reason == "ACCOUNT_DISABLED"
    failed = await _events(db, "auth.login_failed")
    assert failed[-1]["reason"] == "ACCOUNT_DISABLED"
    assert await sessions.is_revoked(db, "jti-1", str(user.user_id), issued) == \
        "ACCOUNT_DISABLED"
    # The services' own check (a fresh cache) says the same.
    assert await RevokedTokens(db, 5.0).account(str(user.user_id), issued) == "ACCOUNT_DISABLED"
    [event] = await _events(db, "user.disabled")
    assert (event["actor"], event["username"], event["via"]) == ("operator:ada", "rad", "api")

    assert await accounts.set_disabled(db, TOPOLOGY, "rad", False, "ada", via="cli")
    assert (await sessions.login(db, TOPOLOGY, "rad", PASSWORD, "127.0.0.1")).username == "rad"
    assert await sessions.is_revoked(db, "jti-1", str(user.user_id), issued) == ""
    assert len(await _events(db, "user.enabled")) == 1


async def test_the_last_enabled_admin_cannot_be_disabled(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "ada", PASSWORD, "admin", None, "root", via="cli")
    with pytest.raises(FailedPrecondition) as refused:
        await accounts.set_disabled(db, TOPOLOGY, "ada", True, "root", via="cli")
    assert refused.value.reason == "LAST_ADMIN"
    await accounts.add(db, TOPOLOGY, "bob", PASSWORD, "admin", None, "root", via="cli")
    assert await accounts.set_disabled(db, TOPOLOGY, "ada", True, "root", via="cli")
    with pytest.raises(FailedPrecondition):
        await accounts.set_disabled(db, TOPOLOGY, "bob", True, "root", via="cli")


async def test_revoke_sessions_and_reset_password(db: Any) -> None:
    await accounts.add(db, TOPOLOGY, "rad", PASSWORD, "auditor", None, "root", via="cli")
    user = await sessions.login(db, TOPOLOGY, "rad", PASSWORD, "127.0.0.1")
    before = int(time.time()) - 1  # a token issued a second before the revocation
    await accounts.revoke_sessions(db, TOPOLOGY, "rad", "root", via="cli")
    assert await sessions.is_revoked(db, "j", str(user.user_id), before) == "SESSIONS_REVOKED"
    later = int(time.time()) + 1
    assert await sessions.is_revoked(db, "j", str(user.user_id), later) == ""
    assert len(await _events(db, "user.sessions_revoked")) == 1

    await accounts.reset_password(db, TOPOLOGY, "rad", NEW_PASSWORD, "root", via="cli")
    with pytest.raises(Unauthenticated):
        await users.authenticate(db, "rad", PASSWORD)
    assert (await users.authenticate(db, "rad", NEW_PASSWORD)).username == "rad"
    [event] = await _events(db, "user.password_reset")
    assert event["sessions_revoked"] is True and NEW_PASSWORD not in str(event)
    with pytest.raises(NotFound):
        await accounts.revoke_sessions(db, TOPOLOGY, "nobody", "root", via="cli")
