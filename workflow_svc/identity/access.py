"""The caller of a review operation: facility scope and what each role may change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar_core.errors import PermissionDenied
from workflow_svc.identity.users import ADMIN, AUDITOR, RADIOLOGIST

SEES_ALL = (ADMIN, AUDITOR)
WRITERS = (RADIOLOGIST, ADMIN)


@dataclass(frozen=True)
class Caller:
    """A verified user as the gateway names it."""

    user_id: str
    username: str
    role: str
    facilities: tuple[str, ...] = ()

    def scope(self) -> Sequence[str]:
        """Facilities the caller may see; empty means all (admin and auditor)."""
        if self.role in SEES_ALL:
            return ()
        if self.role == RADIOLOGIST and self.facilities:
            return self.facilities
        raise PermissionDenied("NO_FACILITY_SCOPE", "this account is bound to no facility",
                               username=self.username)

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


SYSTEM = Caller("", "system", ADMIN)
