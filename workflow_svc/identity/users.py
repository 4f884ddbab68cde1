"""Users and password authentication (argon2id hashes, roles and facility binding)."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from sidecar_core.db import Database
from sidecar_core.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sidecar_core.store.models import Facility, User
from workflow_svc.identity.passwords import (
    hash_password,
    hash_password_async,
    needs_rehash,
    verify_password,
    verify_password_async,
)

log = logging.getLogger(__name__)
__all__ = ["ROLES", "AuthenticatedUser", "hash_password", "verify_password"]

RADIOLOGIST = "radiologist"
ADMIN = "admin"
AUDITOR = "auditor"
ROLES = (RADIOLOGIST, ADMIN, AUDITOR)

_MAX_PASSWORD = 1024


@dataclass(frozen=True)
class AuthenticatedUser:
    """Who logged in: facilities is empty for admin and auditor (they see every facility)."""

    user_id: uuid.UUID
    username: str
    role: str
    facilities: tuple[str, ...]


# Compared against when the user does not exist, so a login takes as long either way.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_username(username: str) -> None:
    if not username or len(username) > 64:
        raise InvalidArgument("INVALID_USERNAME", "username must be 1 to 64 characters",
                              username=username[:64])
    if any(c.isspace() or not c.isprintable() for c in username):
        raise InvalidArgument("INVALID_USERNAME",
                              "username must not contain spaces or control characters",
                              username=username)


def check_password(password: str) -> None:
    if not password or len(password) > _MAX_PASSWORD:
        raise InvalidArgument("INVALID_PASSWORD",
                              f"password must be 1 to {_MAX_PASSWORD} characters")


async def add_user(db: Database, username: str, password: str, role: str,
                   facility: str | None = None) -> uuid.UUID:
    """Creates a user: a radiologist needs exactly one facility, admin and auditor take none."""
    check_username(username)
    check_password(password)
    if role not in ROLES:
        raise InvalidArgument("INVALID_ROLE", f"role must be one of {', '.join(ROLES)}",
                              role=role)
    if role == RADIOLOGIST and not facility:
        raise InvalidArgument("FACILITY_REQUIRED", "a radiologist is bound to one facility",
                              username=username)
    if role != RADIOLOGIST and facility:
        raise InvalidArgument("FACILITY_NOT_ALLOWED",
                              f"role {role} sees every facility; give no facility", role=role)
    password_hash = await hash_password_async(password)
    try:
        async with db.unit_of_work() as session:
            facility_id = None
            if facility:
                facility_id = await session.scalar(
                    select(Facility.id).where(Facility.name == facility))
                if facility_id is None:
                    raise NotFound("FACILITY_NOT_FOUND", f"no facility {facility!r}",
                                   facility=facility)
            user = User(id=uuid.uuid4(), username=username, password_hash=password_hash,
                        role=role, facility_id=facility_id)
            session.add(user)
    except IntegrityError as exc:
        raise AlreadyExists("USER_EXISTS", f"user {username!r} already exists",
                            username=username) from exc
    return user.id


async def authenticate(db: Database, username: str, password: str) -> AuthenticatedUser:
    """Checks the password; Unauthenticated(BAD_CREDENTIALS) for an unknown user or a wrong one."""
    row = None
    if username and len(username) <= 64 and len(password) <= _MAX_PASSWORD:
        async with db.read() as session:
            row = (await session.execute(
                select(User.id, User.username, User.password_hash, User.role, Facility.name,
                       User.disabled_at)
                .outerjoin(Facility, Facility.id == User.facility_id)
                .where(User.username == username)
            )).one_or_none()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    ok = await verify_password_async(password[:_MAX_PASSWORD], stored)
    if row is None or not ok or not password:
        raise Unauthenticated("BAD_CREDENTIALS", "unknown user or wrong password")
    if row.disabled_at is not None:
        raise PermissionDenied("ACCOUNT_DISABLED", "this account is disabled; ask an "
                               "administrator", username=username)
    if row.role not in ROLES or (row.role == RADIOLOGIST and not row.name):
        raise Unauthenticated("ACCOUNT_MISCONFIGURED",
                              "this account has no valid role or facility; ask an administrator")
    if needs_rehash(row.password_hash):
        await _rehash(db, row.id, row.password_hash, password)
    facilities = (row.name,) if row.role == RADIOLOGIST else ()
    return AuthenticatedUser(row.id, row.username, row.role, facilities)


async def _rehash(db: Database, user_id: uuid.UUID, old_hash: str, password: str) -> None:
    """Replaces a legacy (scrypt) or outdated hash with argon2id, unless it changed meanwhile."""
    new_hash = await hash_password_async(password)
    async with db.unit_of_work() as session:
        await session.execute(update(User).where(User.id == user_id,
                                                 User.password_hash == old_hash)
                              .values(password_hash=new_hash))
    log.info("password hash of user %s upgraded to argon2id", user_id)
