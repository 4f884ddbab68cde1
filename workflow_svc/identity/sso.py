"""Single sign-on accounts: a sign-on the gateway verified at the hospital's OpenID provider
provisions or updates the user's account just in time, so the account lifecycle (disable,
revoke sessions) holds for SSO users as for local ones."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists, InvalidArgument, PermissionDenied, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility, LoginAttempt, User
from workflow_svc.identity import users

ACTOR = "auth"
METHOD = "oidc"
# The password hash of an SSO account: no password ever matches it (not a PHC string).
NO_PASSWORD = "!sso"
MAX_FACILITIES = 100


def _check(issuer: str, subject: str, username: str, role: str,
           facilities: Sequence[str]) -> None:
    if not issuer or len(issuer) > 512:
        raise InvalidArgument("INVALID_ISSUER", "issuer must be 1 to 512 characters")
    if not subject or len(subject) > 255:
        raise InvalidArgument("INVALID_SUBJECT", "subject must be 1 to 255 characters")
    users.check_username(username)
    if role and role not in users.ROLES:
        raise InvalidArgument("INVALID_ROLE", f"role must be one of {', '.join(users.ROLES)}",
                              role=role[:32])
    if len(facilities) > MAX_FACILITIES or any(not f or len(f) > 64 for f in facilities):
        raise InvalidArgument("INVALID_FACILITIES",
                              f"at most {MAX_FACILITIES} facility names of 1 to 64 characters")


async def login(db: Database, topology: Topology, issuer: str, subject: str, username: str,
                role: str, facilities: Sequence[str], address: str = "", refused: str = "",
                *, session_id: str = "") -> users.AuthenticatedUser:
    """The account of an SSO sign-on, created or updated from the mapped claims.

    Refused, and audited as `auth.login_failed` with the reason: no role (NO_ROLE), a disabled
    account (ACCOUNT_DISABLED), a username held by another account (USERNAME_TAKEN: a local
    break-glass account is never taken over). A radiologist keeps the facilities of the claims
    that exist here (none: signed in, sees nothing). Success is `auth.login_succeeded` with
    method `oidc`, the issuer and the subject. `refused`: the gateway refused the sign-on
    for that reason (an invalid ID token...): audited, then Unauthenticated."""
    address = address[:64]
    if refused:
        await _refused(db, topology, issuer[:512], subject[:255], username[:64], address,
                       refused[:64])
    _check(issuer, subject, username, role, facilities)
    context = {"username": username, "address": address, "method": METHOD, "issuer": issuer,
               "subject": subject}
    try:
        if not role:
            raise PermissionDenied("NO_ROLE", "your sign-on gives you no role in the sidecar; "
                                   "ask an administrator", username=username)
        user = await _provision(db, issuer, subject, username, role, facilities)
    except (PermissionDenied, AlreadyExists) as exc:
        async with db.unit_of_work() as s:
            s.add(LoginAttempt(username=username, address=address, ok=False))
            await audit.record(s, topology, "auth.login_failed", ACTOR,
                               context={**context, "reason": exc.reason})
        raise
    async with db.unit_of_work() as s:
        s.add(LoginAttempt(username=user.username, address=address, ok=True))
        await audit.record(s, topology, "auth.login_succeeded", ACTOR, context={
            **context, "role": user.role, "facilities": list(user.facilities),
            **({"session_id": session_id} if session_id else {})})
    return user


async def _provision(db: Database, issuer: str, subject: str, username: str, role: str,
                     facilities: Sequence[str]) -> users.AuthenticatedUser:
    try:
        async with db.unit_of_work() as s:
            known = [] if role != users.RADIOLOGIST else list((await s.execute(
                select(Facility.id, Facility.name).where(Facility.name.in_(list(facilities)))
                .order_by(Facility.name))).all())
            facility_id = known[0][0] if known else None
            row = (await s.execute(select(User).where(
                User.oidc_issuer == issuer, User.oidc_subject == subject).with_for_update())
            ).scalar_one_or_none()
            if row is None:
                row = User(id=uuid.uuid4(), username=username, password_hash=NO_PASSWORD,
                           role=role, facility_id=facility_id, oidc_issuer=issuer,
                           oidc_subject=subject)
                s.add(row)
                await s.flush()
            else:
                if row.disabled_at is not None:
                    raise PermissionDenied("ACCOUNT_DISABLED", "this account is disabled; ask "
                                           "an administrator", username=row.username)
                await s.execute(update(User).where(User.id == row.id).values(
                    username=username, role=role, facility_id=facility_id))
            user_id = row.id
    except IntegrityError as exc:
        raise AlreadyExists("USERNAME_TAKEN", f"the username {username!r} belongs to another "
                            "account of the sidecar; ask an administrator",
                            username=username) from exc
    names = tuple(name for _, name in known)
    return users.AuthenticatedUser(user_id, username, role, names)


async def _refused(db: Database, topology: Topology, issuer: str, subject: str, username: str,
                   address: str, reason: str) -> None:
    async with db.unit_of_work() as s:
        if username:
            s.add(LoginAttempt(username=username, address=address, ok=False))
        await audit.record(s, topology, "auth.login_failed", ACTOR, context={
            "username": username, "address": address, "method": METHOD, "issuer": issuer,
            "subject": subject, "reason": reason})
    raise Unauthenticated(reason, "the sign-on was refused")
