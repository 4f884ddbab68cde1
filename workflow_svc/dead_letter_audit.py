"""Audits every dead letter: which message gave up, after how many deliveries, and why."""

from __future__ import annotations

import logging
import uuid

from google.protobuf.message import DecodeError, Message
from sqlalchemy.exc import DBAPIError, OperationalError

from protos.sidecar.events.v1 import events_pb2
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.db import Database
from sidecar_core.errors import TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.consumed import first_time
from sidecar_core.messaging.subjects import (
    AI_RUN_FINDINGS_STORED,
    AI_RUN_FINISHED,
    ASSET_PREPROCESSED,
    JOB_AI_RUN,
    JOB_OVERLAY,
    JOB_PREPROCESS,
    STUDY_RECEIVED,
    Topology,
)

log = logging.getLogger(__name__)
ACTOR = "workflow_svc"
CONSUMER = "dead-letter-audit"
EVENT = "job.dead_lettered"
# What each original subject carries (those whose payload names its study); the operators'
# dead-letter list (dead_letters.py) decodes with the same map.
PAYLOADS: dict[str, type[Message]] = {
    JOB_PREPROCESS: events_pb2.PreprocessJob,
    JOB_OVERLAY: events_pb2.PreprocessJob,
    JOB_AI_RUN: events_pb2.AiRunJob,
    STUDY_RECEIVED: events_pb2.StudyReceived,
    ASSET_PREPROCESSED: events_pb2.PreprocessCompleted,
    AI_RUN_FINISHED: events_pb2.AiRunFinished,
    AI_RUN_FINDINGS_STORED: events_pb2.AiRunFindingsStored,
}


class DeadLetterAuditor:
    """Records `job.dead_lettered` once per dead letter, under its study when it names one."""

    def __init__(self, db: Database, topology: Topology) -> None:
        self.db = db
        self.topology = topology

    async def handle(self, delivery: Delivery) -> None:
        try:
            letter = events_pb2.DeadLetter.FromString(delivery.data)
        except DecodeError:
            log.warning("undecodable dead letter on %s skipped", delivery.subject)
            return
        subject = letter.original_subject.removeprefix(self.topology.prefix + ".")
        try:
            async with self.db.unit_of_work() as s:
                if not await first_time(s, CONSUMER, delivery.msg_id):
                    return
                await audit.record(
                    s, self.topology, EVENT, ACTOR, study_of(subject, letter.original_payload),
                    job_id=letter.original_msg_id, attempt=letter.deliveries,
                    error_class=letter.error_class, error_message=letter.error_message,
                    context={"subject": letter.original_subject, "consumer": letter.consumer})
        except (OperationalError, DBAPIError, OSError) as exc:
            raise TransientError(f"recording dead letter: {exc}") from exc


def decode_payload(subject: str, payload: bytes) -> Message | None:
    """A dead message's payload (`subject` without the prefix), or None when its type is not
    known or it no longer decodes."""
    message_type = PAYLOADS.get(subject)
    if message_type is None:
        return None
    try:
        return message_type.FromString(payload)
    except DecodeError:
        return None


def study_of(subject: str, payload: bytes) -> StudyRef | None:
    """The study a dead message was about, when its payload still decodes."""
    message = decode_payload(subject, payload)
    if message is None:
        return None
    try:
        study_id = uuid.UUID(getattr(message, "study_id", ""))
    except ValueError:
        return None
    key = getattr(message, "study", None)
    if key is None:
        return StudyRef(study_id=study_id)
    return StudyRef(key.facility, key.accession, key.study_instance_uid, study_id)
