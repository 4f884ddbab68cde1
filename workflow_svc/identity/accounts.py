"""The account lifecycle: list, disable, enable, reset a password, revoke every session; each
change audited with the operator and the door it came in by (`cli`, `api`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.user_auth import account_refusal
from sidecar_core.store.models import Facility, User
from workflow_svc.identity import users
from workflow_svc.identity.passwords import hash_password_async


@dataclass(frozen=True)
class Account:
    """A user as an operator sees it (never the password hash)."""

    user_id: uuid.UUID
    username: str
    role: str
    facility: str
    created_at: datetime
    disabled_at: datetime | None
    sessions_revoked_at: datetime | None

    @property
    def status(self) -> str:
        return "disabled" if self.disabled_at is not None else "enabled"


def _operator(operator: str) -> str:
    operator = operator.strip()[:64]
    if not operator:
        raise InvalidArgument("OPERATOR_REQUIRED", "name the operator")
    return operator


async def _record(s: AsyncSession, topology: Topology, event: str, username: str,
                  operator: str, via: str, **extra: object) -> None:
    await audit.record(s, topology, event, "operator:" + operator, context={
        "username": username, "operator": operator, "via": via, **extra})


async def list_accounts(db: Database) -> list[Account]:
    async with db.read() as s:
        rows = (await s.execute(
            select(User.id, User.username, User.role, Facility.name, User.created_at,
                   User.disabled_at, User.sessions_revoked_at)
            .outerjoin(Facility, Facility.id == User.facility_id).order_by(User.username)
        )).all()
    return [Account(r[0], r[1], r[2], r[3] or "", r[4], r[5], r[6]) for r in rows]


async def add(db: Database, topology: Topology, username: str, password: str, role: str,
              facility: str | None, operator: str, via: str) -> uuid.UUID:
    """`users.add_user`, audited as `user.created`."""
    operator = _operator(operator)
    uid = await users.add_user(db, username, password, role, facility)
    async with db.unit_of_work() as s:
        await _record(s, topology, "user.created", username, operator, via, role=role,
                      facility=facility or "")
    return uid


async def _user(s: AsyncSession, username: str) -> User:
    row = (await s.execute(select(User).where(User.username == username).with_for_update())
           ).scalar_one_or_none()
    if row is None:
        raise NotFound("USER_NOT_FOUND", f"no user {username!r}", username=username)
    return row


async def set_disabled(db: Database, topology: Topology, username: str, disabled: bool,
                       operator: str, via: str) -> bool:
    """Disables (or enables) a user; False when it already was. Disabling the last enabled
    admin is FailedPrecondition(LAST_ADMIN). A disabled user's sessions are refused within the
    revocation cache time; audited as `user.disabled` / `user.enabled`."""
    operator = _operator(operator)
    async with db.unit_of_work() as s:
        user = await _user(s, username)
        if (user.disabled_at is not None) == disabled:
            return False
        if disabled and user.role == users.ADMIN:
            # Lock every admin row so that two admins disabled at once cannot both pass.
            admins = (await s.execute(select(User.id).where(
                User.role == users.ADMIN, User.disabled_at.is_(None)).with_for_update())).all()
            if len(admins) <= 1:
                raise FailedPrecondition("LAST_ADMIN", f"{username} is the last enabled admin; "
                                         "enable or add another admin first", username=username)
        now = await s.scalar(select(func.now())) or datetime.now(UTC)
        await s.execute(update(User).where(User.id == user.id)
                        .values(disabled_at=now if disabled else None))
        await _record(s, topology, "user.disabled" if disabled else "user.enabled", username,
                      operator, via)
    return True


async def revoke_sessions(db: Database, topology: Topology, username: str, operator: str,
                          via: str) -> None:
    """Revokes every session of the user issued until now; audited as `user.sessions_revoked`."""
    operator = _operator(operator)
    async with db.unit_of_work() as s:
        user = await _user(s, username)
        await _revoke(s, user.id)
        await _record(s, topology, "user.sessions_revoked", username, operator, via)


async def _revoke(s: AsyncSession, user_id: uuid.UUID) -> None:
    await s.execute(update(User).where(User.id == user_id).values(sessions_revoked_at=func.now()))


async def reset_password(db: Database, topology: Topology, username: str, password: str,
                         operator: str, via: str) -> None:
    """Sets a new password and revokes the user's sessions; audited as `user.password_reset`
    (never the password)."""
    operator = _operator(operator)
    users.check_password(password)
    password_hash = await hash_password_async(password)
    async with db.unit_of_work() as s:
        user = await _user(s, username)
        await s.execute(update(User).where(User.id == user.id)
                        .values(password_hash=password_hash))
        await _revoke(s, user.id)
        await _record(s, topology, "user.password_reset", username, operator, via,
                      sessions_revoked=True)


async def session_refused(db: Database, user_id: str, issued_at: int) -> str:
    """Why a session token of `user_id` issued at `issued_at` (epoch seconds) is refused now:
    'ACCOUNT_DISABLED', 'SESSIONS_REVOKED', or '' when it is not. Tokens that name no known
    user (the operator's) are not refused here."""
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return ""
    async with db.read() as s:
        row = (await s.execute(select(User.disabled_at, User.sessions_revoked_at)
                               .where(User.id == uid))).one_or_none()
    return account_refusal(row[0], row[1], issued_at) if row is not None else ""
