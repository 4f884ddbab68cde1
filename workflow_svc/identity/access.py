"""The caller of a review operation: facility scope and what each role may change.

The caller is the user of the session token the gateway forwarded, verified by this service
(sidecar_core.security.user_auth), never what a request says."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar_core.errors import PermissionDenied
from sidecar_core.security.user_auth import require_user
from workflow_svc.identity.users import ADMIN, AUDITOR, RADIOLOGIST

SEES_ALL = (ADMIN, AUDITOR)
WRITERS = (RADIOLOGIST, ADMIN)


@dataclass(frozen=True)
class Caller:
    """A verified user: who, their role and the facilities their token names."""

    user_id: str
    username: str
    role: str
    facilities: tuple[str, ...] = ()
    # Every facility: an explicit claim of the token (admin, auditor, the operator).
    all_facilities: bool = False
    # The session (its token id) the call came in: what the audit ties a user's actions by.
    session_id: str = ""

    def scope(self) -> Sequence[str] | None:
        """Facilities the caller may see: None for every one (only with `all_facilities`),
        else the facilities listed; empty sees nothing."""
        return None if self.all_facilities else self.facilities

    def require_writer(self) -> None:
        """Auditors read only; PermissionDenied(READ_ONLY_ROLE) for them."""
        if self.role not in WRITERS:
            raise PermissionDenied("READ_ONLY_ROLE", f"role {self.role or 'none'} may not "
                                   "change reviews", role=self.role)

    @property
    def user_uuid(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.user_id)
        except ValueError:
            return None

    @property
    def actor(self) -> str:
        return f"user:{self.username}"[:64]

    def audit_context(self) -> dict[str, str]:
        """The role and session an audit event of this caller's action carries."""
        return {"role": self.role, **({"session_id": self.session_id} if self.session_id else {})}


SYSTEM = Caller("", "system", ADMIN, all_facilities=True)


def current_caller() -> Caller:
    """The verified user of the call being served; Unauthenticated without one."""
    user = require_user()
    return Caller(user.user_id, user.username, user.role, user.facilities, user.all_facilities,
                  user.session_jti or user.jti)
