"""Logins with a rate limit per user and per address, audited failures, and token revocation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import LoginAttempt, RevokedToken
from workflow_svc.identity import users

ACTOR = "auth"


@dataclass(frozen=True)
class LoginLimits:
    window_s: float = 300.0
    per_user: int = 5
    per_address: int = 20


async def _failures(db: Database, username: str, address: str, since: datetime
                    ) -> tuple[int, int]:
    """Failed logins in the window: of the username since its last success, and of the address."""
    async with db.read() as s:
        last_ok = await s.scalar(select(func.max(LoginAttempt.at)).where(
            LoginAttempt.username == username, LoginAttempt.ok.is_(True)))
        user_since = max(since, last_ok) if last_ok is not None else since
        per_user = await s.scalar(select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.username == username, LoginAttempt.ok.is_(False),
            LoginAttempt.at > user_since))
        per_address = 0
        if address:
            per_address = await s.scalar(select(func.count()).select_from(LoginAttempt).where(
                and_(LoginAttempt.address == address, LoginAttempt.ok.is_(False),
                     LoginAttempt.at > since))) or 0
    return int(per_user or 0), int(per_address)


async def login(db: Database, topology: Topology, username: str, password: str,
                address: str = "", limits: LoginLimits = LoginLimits()
                ) -> users.AuthenticatedUser:
    """Authenticates; ResourceExhausted(LOGIN_RATE_LIMITED) once too many attempts failed.

    Every failure is recorded and audited as `auth.login_failed` (username, address and reason;
    never the password)."""
    username, address = username[:64], address[:64]
    since = datetime.now(UTC) - timedelta(seconds=limits.window_s)
    per_user, per_address = await _failures(db, username, address, since)
    if per_user >= limits.per_user or per_address >= limits.per_address:
        which = "user" if per_user >= limits.per_user else "address"
        async with db.unit_of_work() as s:
            await audit.record(s, topology, "auth.login_rate_limited", ACTOR, context={
                "username": username, "address": address, "limit": which})
        raise ResourceExhausted(
            "LOGIN_RATE_LIMITED", f"too many failed logins for this {which}; try again later",
            retry_after_s=int(limits.window_s), limit=which)
    try:
        user = await users.authenticate(db, username, password)
    except (Unauthenticated, InvalidArgument) as exc:
        async with db.unit_of_work() as s:
            s.add(LoginAttempt(username=username, address=address, ok=False))
            await audit.record(s, topology, "auth.login_failed", ACTOR, context={
                "username": username, "address": address, "reason": exc.reason})
        raise
    async with db.unit_of_work() as s:
        s.add(LoginAttempt(username=username, address=address, ok=True))
        await audit.record(s, topology, "auth.login_succeeded", ACTOR, context={
            "username": username, "address": address, "role": user.role})
    return user


async def revoke(db: Database, topology: Topology, jti: str, expires_at: datetime,
                 user_id: uuid.UUID | None, actor: str) -> None:
    """Revokes a token id until it expires (idempotent); audited as `auth.logout`."""
    if not jti or len(jti) > 64:
        raise InvalidArgument("INVALID_TOKEN_ID", "jti must be 1 to 64 characters")
    async with db.unit_of_work() as s:
        await s.execute(insert(RevokedToken).values(jti=jti, user_id=user_id,
                                                    expires_at=expires_at)
                        .on_conflict_do_nothing(index_elements=["jti"]))
        await s.execute(delete(RevokedToken).where(
            RevokedToken.expires_at < datetime.now(UTC) - timedelta(hours=1)))
        await audit.record(s, topology, "auth.logout", actor, context={"jti": jti})


async def is_revoked(db: Database, jti: str) -> bool:
    async with db.read() as s:
        return await s.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None
