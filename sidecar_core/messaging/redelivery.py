"""The audit event of a message delivered again: which attempt, to which consumer, and why."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import Topology

EVENT = "job.redelivered"


async def record_if_redelivered(session: AsyncSession, topology: Topology, actor: str,
                                study: StudyRef | None, delivery: Delivery,
                                job_id: str = "") -> bool:
    """Records `job.redelivered` in the caller's transaction when this is not the first
    delivery (its cause: a nak with the error, or the ack wait of a vanished worker)."""
    if delivery.attempt <= 1:
        return False
    await audit.record(
        session, topology, EVENT, actor, study,
        job_id=job_id or delivery.msg_id, attempt=delivery.attempt,
        context={"consumer": delivery.consumer, "cause": delivery.cause,
                 "subject": delivery.subject, "msg_id": delivery.msg_id})
    return True
