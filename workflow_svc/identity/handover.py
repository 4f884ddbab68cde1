"""Viewer hand-over codes: each is spent once, across every gateway replica (the database)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert

from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, InvalidArgument
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import RevokedToken

HANDED_OVER = "viewer.handover"
REFUSED = "viewer.handover_refused"


async def redeem(db: Database, topology: Topology, *, jti: str, expires_at: datetime,
                 user_id: uuid.UUID | None, actor: str, study_uid: str, facility: str,
                 address: str) -> None:
    """Spends the code `jti`: its id joins the revoked token ids (until it expires), so a second
    redemption, here or on another replica, is FAILED_PRECONDITION CODE_ALREADY_USED. Audited
    as `viewer.handover` (who, which study), a reuse as `viewer.handover_refused`."""
    if not jti or len(jti) > 64:
        raise InvalidArgument("INVALID_TOKEN_ID", "jti must be 1 to 64 characters")
    study = audit.StudyRef(facility=facility, study_instance_uid=study_uid)
    context = {"address": address[:100], "code_id": jti[:12]}
    async with db.unit_of_work() as s:
        spent = await s.scalar(insert(RevokedToken)
                               .values(jti=jti, user_id=user_id, expires_at=expires_at)
                               .on_conflict_do_nothing(index_elements=["jti"])
                               .returning(RevokedToken.jti))
        if spent is not None:
            await audit.record(s, topology, HANDED_OVER, actor, study, context=context)
            return
    async with db.unit_of_work() as s:
        await audit.record(s, topology, REFUSED, actor, study,
                           context={**context, "reason": "CODE_ALREADY_USED"})
    raise FailedPrecondition("CODE_ALREADY_USED", "this viewer hand-over code was already used")
