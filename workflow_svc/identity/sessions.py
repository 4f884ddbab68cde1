"""Logins with an exponential back-off per user and per address (never a lock-out), audited
failures, and token revocation."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import LoginAttempt, RevokedToken
from workflow_svc.identity import accounts, users

ACTOR = "auth"


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins slow down instead of locking out: after `per_user` failures of a username
    (since its last success) or `per_address` failures from an address, within `window_s`,
    each next attempt must wait `backoff_s` × 2^(failures beyond the free ones), at most
    `backoff_max_s`, after the last failure; an attempt made earlier is refused unverified."""

    window_s: float = 300.0
    per_user: int = 5
    per_address: int = 20
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def delay(self, failures: int, free: int) -> float:
        if failures < free:
            return 0.0
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** min(failures - free, 30))


@dataclass(frozen=True)
class _Failures:
    user: int
    user_last: datetime | None
    address: int
    address_last: datetime | None
    now: datetime


async def _failures(db: Database, username: str, address: str, since: datetime) -> _Failures:
    """Failed logins in the window (of the username since its last success, and of the address)
    and the last of each, with the database's clock."""
    async with db.read() as s:
        now = await s.scalar(select(func.now())) or datetime.now(UTC)
        last_ok = await s.scalar(select(func.max(LoginAttempt.at)).where(
            LoginAttempt.username == username, LoginAttempt.ok.is_(True)))
        user_since = max(since, last_ok) if last_ok is not None else since
        per_user, user_last = (await s.execute(
            select(func.count(), func.max(LoginAttempt.at)).select_from(LoginAttempt).where(
                LoginAttempt.username == username, LoginAttempt.ok.is_(False),
                LoginAttempt.at > user_since))).one()
        per_address, address_last = 0, None
        if address:
            per_address, address_last = (await s.execute(
                select(func.count(), func.max(LoginAttempt.at)).select_from(LoginAttempt).where(
                    and_(LoginAttempt.address == address, LoginAttempt.ok.is_(False),
                         LoginAttempt.at > since)))).one()
    return _Failures(int(per_user or 0), user_last, int(per_address or 0), address_last, now)


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it: the attempts of one
    username (and of one address) are checked and verified one at a time in this process, so
    that a burst of parallel attempts cannot all pass the back-off check before any failed."""

    def __init__(self) -> None:
        self.locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users_ = self.locks.get(key, (asyncio.Lock(), 0))
        self.locks[key] = (lock, users_ + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users_ = self.locks[key]
            if users_ <= 1:
                del self.locks[key]
            else:
                self.locks[key] = (lock, users_ - 1)


class _Coalesced:
    """Audits a flood of refusals as one event per key a minute (with how many it stands for)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}

    def due(self, key: tuple[str, str]) -> int | None:
        """None to stay silent, else the count of refusals the event stands for."""
        now = time.monotonic()
        last, count = self.seen.get(key, (-1e18, 0))
        if now - last < self.every_s:
            self.seen[key] = (last, count + 1)
            return None
        if len(self.seen) > 10000:
            self.seen.clear()
        self.seen[key] = (now, 0)
        return count + 1


_LOCKS = _KeyedLocks()
_RATE_LIMITED = _Coalesced()


async def login(db: Database, topology: Topology, username: str, password: str,
                address: str = "", limits: LoginLimits = LoginLimits(), *,
                session_id: str = "") -> users.AuthenticatedUser:
    """Authenticates; ResourceExhausted(LOGIN_RATE_LIMITED, retry_after_s) for an attempt made
    before the back-off of its username or address has passed (the password is not checked).

    Every failure is recorded and audited as `auth.login_failed` (username, address and reason;
    never the password); refused attempts as `auth.login_rate_limited`, at most one event a
    minute per username and address (`refused`: how many it stands for)."""
    username, address = username[:64], address[:64]
    async with AsyncExitStack() as held:
        if address:
            await held.enter_async_context(_LOCKS.hold("address:" + address))
        await held.enter_async_context(_LOCKS.hold("user:" + username))
        since = datetime.now(UTC) - timedelta(seconds=limits.window_s)
        seen = await _failures(db, username, address, since)
        waits = {"user": _wait(seen.now, seen.user_last, limits.delay(seen.user, limits.per_user)),
                 "address": _wait(seen.now, seen.address_last,
                                  limits.delay(seen.address, limits.per_address))}
        which = max(waits, key=lambda k: waits[k])
        if waits[which] > 0:
            retry_after = max(1, math.ceil(waits[which]))
            refused = _RATE_LIMITED.due((username, address))
            if refused is not None:
                async with db.unit_of_work() as s:
                    await audit.record(s, topology, "auth.login_rate_limited", ACTOR, context={
                        "username": username, "address": address, "limit": which,
                        "failures": seen.user if which == "user" else seen.address,
                        "retry_after_s": retry_after, "refused": refused})
            raise ResourceExhausted(
                "LOGIN_RATE_LIMITED", f"too many failed logins for this {which}; try again in "
                f"{retry_after} s", retry_after_s=retry_after, limit=which)
        try:
            user = await users.authenticate(db, username, password)
        except (Unauthenticated, InvalidArgument, PermissionDenied) as exc:
            async with db.unit_of_work() as s:
                s.add(LoginAttempt(username=username, address=address, ok=False))
                await audit.record(s, topology, "auth.login_failed", ACTOR, context={
                    "username": username, "address": address, "reason": exc.reason})
            raise
        async with db.unit_of_work() as s:
            s.add(LoginAttempt(username=username, address=address, ok=True))
            await audit.record(s, topology, "auth.login_succeeded", ACTOR, context={
                "username": username, "address": address, "role": user.role,
                **({"session_id": session_id} if session_id else {})})
    return user


def _wait(now: datetime, last: datetime | None, delay: float) -> float:
    """Seconds until `delay` after `last` has passed (0 when it has)."""
    if last is None or delay <= 0:
        return 0.0
    return (last + timedelta(seconds=delay) - now).total_seconds()


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


async def is_revoked(db: Database, jti: str, user_id: str = "", issued_at: int = 0) -> str:
    """Why the session is refused ('' when it is not): TOKEN_REVOKED (logged out), or, for the
    user and issue time given, ACCOUNT_DISABLED or SESSIONS_REVOKED (account lifecycle)."""
    async with db.read() as s:
        if await s.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None:
            return "TOKEN_REVOKED"
    return await accounts.session_refused(db, user_id, issued_at) if user_id else ""
