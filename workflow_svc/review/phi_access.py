"""PHI access events: the gateway's record of each HTTP request that returned patient data, or
was refused on a patient-data route, stored as one audit event per request (docs/audit.md,
"Access audit"). Who it was comes from the request's own signed token, verified here; the
study, facility and patient reference from the store, never from the gateway's word."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core import audit
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import session_tokens
from sidecar_core.security.session_tokens import KeySet, Principal
from sidecar_core.store.models import Facility
from sidecar_core.store.models import Study as StudyRow

ACCESSED = "phi.accessed"
QUERIED = "phi.queried"
REFUSED = "phi.access_refused"
# What a request read (the gateway's route families).
WHATS = frozenset({"worklist", "study", "findings", "assets", "drafts", "chat", "priors",
                   "dicomweb-qido", "wado", "frames", "rendered", "metadata", "audit", "export"})
REFUSED_STATUSES = frozenset({401, 403, 404})
MAX_BATCH = 1000
MAX_STUDIES = 100  # studies listed in one event (a worklist page, a QIDO answer)
MAX_SERIES = 100
MAX_QUERY = 1000
_UID_CHARS = frozenset("0123456789.")


@dataclass(frozen=True)
class _Study:
    id: uuid.UUID
    facility: str
    accession: str
    uid: str
    patient_id: str

    @property
    def patient_ref(self) -> str:
        """The patient as the store knows them: PatientID, issuer the facility (HL7 CX)."""
        return f"{self.patient_id}^^^{self.facility}" if self.patient_id else ""

    def ref(self) -> audit.StudyRef:
        return audit.StudyRef(self.facility, self.accession, self.uid, self.id)

    def summary(self) -> dict[str, str]:
        return {"study_id": str(self.id), "study_instance_uid": self.uid,
                "facility": self.facility, "accession": self.accession,
                "patient_ref": self.patient_ref}


def validate(accesses: Sequence[rpb.PhiAccess]) -> None:
    """InvalidArgument for a batch the gateway should never send."""
    if len(accesses) > MAX_BATCH:
        raise InvalidArgument("TOO_MANY_ACCESSES", f"at most {MAX_BATCH} accesses per call",
                              count=len(accesses))
    for a in accesses:
        if a.what not in WHATS:
            raise InvalidArgument("INVALID_ACCESS_WHAT",
                                  f"what must be one of {', '.join(sorted(WHATS))}",
                                  what=a.what[:64])
        if not (100 <= a.status <= 599):
            raise InvalidArgument("INVALID_STATUS", "status must be an HTTP status code",
                                  status=a.status)
        if len(a.study_ids) > MAX_STUDIES or len(a.study_instance_uids) > MAX_STUDIES \
                or len(a.series_instance_uids) > MAX_SERIES:
            raise InvalidArgument("TOO_MANY_STUDIES",
                                  f"at most {MAX_STUDIES} studies and {MAX_SERIES} series "
                                  "per access")


def event_type(access: rpb.PhiAccess) -> str | None:
    """phi.accessed / phi.queried for a served request, phi.access_refused for a 401, 403 or
    404; None for other failures (nothing was returned and nothing was refused)."""
    if access.status < 400:
        return QUERIED if access.what == "dicomweb-qido" else ACCESSED
    if access.status in REFUSED_STATUSES:
        return REFUSED
    return None


def _who(keys: KeySet, access: rpb.PhiAccess) -> tuple[Principal | None, str]:
    """The verified principal of the request's token (at the time of the request), or None
    and why."""
    if not access.user_token:
        return None, ""
    at = access.at.ToDatetime(tzinfo=UTC).timestamp() if access.HasField("at") else None
    try:
        return session_tokens.verify(keys, access.user_token, at), ""
    except Unauthenticated as exc:
        return None, exc.reason


async def _studies(session: AsyncSession, access: rpb.PhiAccess, me: Principal | None,
                   served: bool) -> list[_Study]:
    """The studies the request named or returned, from the store: by id, or by Study Instance
    UID within the user's facilities when it was served (a UID may exist in several)."""
    ids = []
    for value in access.study_ids:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    uids = [u for u in access.study_instance_uids if u and len(u) <= 64 and set(u) <= _UID_CHARS]
    if not ids and not uids:
        return []
    query = (select(StudyRow.id, Facility.name, StudyRow.accession, StudyRow.study_instance_uid,
                    StudyRow.dicom_attributes["PatientID"].astext)
             .join(Facility, Facility.id == StudyRow.facility_id)
             .where(or_(StudyRow.id.in_(ids), StudyRow.study_instance_uid.in_(uids))))
    scope = me.scope() if me is not None else ()
    if served and scope is not None and uids:
        query = query.where(or_(StudyRow.id.in_(ids), Facility.name.in_(scope)))
    rows = (await session.execute(query.limit(MAX_STUDIES))).all()
    order = {str(v): i for i, v in enumerate([*access.study_ids, *uids])}
    found = [_Study(r[0], r[1], r[2], r[3], r[4] or "") for r in rows]
    return sorted(found, key=lambda s: order.get(str(s.id), order.get(s.uid, 0)))


def _context(access: rpb.PhiAccess, me: Principal | None, rejected: str,
             studies: list[_Study]) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "user": me.username if me else "",
        "role": me.role if me else "",
        "session_id": (me.session_jti or me.jti) if me else "",
        "client_address": access.client_address[:64],
        "what": access.what,
        "method": access.method[:8],
        "route": access.route[:200],
        "status": access.status,
        "outcome": "ok" if access.status < 400 else "refused",
        "count": max(access.count, 0),
    }
    if me is not None and me.use == session_tokens.USE_VIEWER:
        ctx["token"] = "viewer"
    if access.reason or rejected:
        ctx["reason"] = (access.reason or rejected)[:64]
    if len(studies) == 1:
        ctx["patient_ref"] = studies[0].patient_ref
    elif studies:
        ctx["studies"] = [s.summary() for s in studies]
    unresolved = [v[:64] for v in [*access.study_ids, *access.study_instance_uids]
                  if not any(v in (str(s.id), s.uid) for s in studies)]
    if unresolved:
        ctx["requested"] = unresolved[:MAX_STUDIES]
    if access.series_instance_uids:
        ctx["series"] = [u[:64] for u in access.series_instance_uids]
    if access.query:
        ctx["query"] = access.query[:MAX_QUERY]
    return ctx


async def record(db: Database, topology: Topology, keys: KeySet,
                 accesses: Sequence[rpb.PhiAccess]) -> int:
    """Stores one audit event per access (one transaction for the batch); returns how many."""
    validate(accesses)
    recorded = 0
    async with db.unit_of_work() as s:
        for access in accesses:
            kind = event_type(access)
            if kind is None:
                continue
            me, rejected = _who(keys, access)
            studies = await _studies(s, access, me, kind != REFUSED)
            ref = studies[0].ref() if len(studies) == 1 else None
            at = access.at.ToDatetime(tzinfo=UTC) if access.HasField("at") \
                else datetime.now(UTC)
            actor = f"user:{me.username}"[:64] if me else "anonymous"
            await audit.record(s, topology, kind, actor, ref, at=at,
                               context=_context(access, me, rejected, studies))
            recorded += 1
    return recorded
