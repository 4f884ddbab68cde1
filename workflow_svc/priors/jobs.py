"""Queues the priors jobs: a lookup when a covered study is registered, a retrieval on demand."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.events.v1 import priors_events_pb2 as ppb
from sidecar_core import audit
from sidecar_core.audit import StudyRef
from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.messaging import outbox
from sidecar_core.messaging.subjects import JOB_PRIORS, Topology
from sidecar_core.store.models import Facility, PriorStudy, Study
from workflow_svc.study.states import study_ref

ACTOR = "priors"


def has_pacs(facility: Facility) -> bool:
    """The facility has a PACS to ask for priors: a DIMSE one (`pacs_*`) or a DICOMweb one
    (`pacs_dicomweb_url`, asked instead when both are set)."""
    return bool(facility.pacs_dicomweb_url) or DicomPeer.pacs_of(facility) is not None


def _key(ref: StudyRef) -> common_pb2.StudyKey:
    return common_pb2.StudyKey(facility=ref.facility, accession=ref.accession,
                               study_instance_uid=ref.study_instance_uid)


async def enqueue_find(s: AsyncSession, topology: Topology, study_id: uuid.UUID) -> bool:
    """Called in the registering transaction: a covered study of a facility with a PACS (DIMSE
    or DICOMweb) gets a
    priors lookup, once per completion. A study that is itself a retrieved prior gets none (no
    chain of lookups)."""
    study = (await s.execute(select(Study).where(Study.id == study_id))).scalar_one()
    if not study.eligible:
        return False
    facility = (await s.execute(select(Facility).where(
        Facility.id == study.facility_id))).scalar_one()
    if not has_pacs(facility):
        return False
    retrieved = await s.scalar(
        select(PriorStudy.id).join(Study, Study.id == PriorStudy.study_id)
        .where(Study.facility_id == study.facility_id,
               PriorStudy.study_instance_uid == study.study_instance_uid,
               PriorStudy.retrieve_status != "").limit(1))
    if retrieved is not None:
        return False
    ref = await study_ref(s, study)
    job_id = f"priors-find:{study.id.hex}:{study.completion_count}"
    job = ppb.PriorsJob(job_id=job_id, study_id=str(study.id), study=_key(ref),
                        action=ppb.PRIORS_ACTION_FIND)
    await outbox.enqueue(s, topology.subject(JOB_PRIORS), job_id, job)
    return True


async def enqueue_retrieve(s: AsyncSession, topology: Topology, study: Study,
                           prior: PriorStudy, actor: str) -> str:
    """Queues the retrieval (C-MOVE or WADO-RS) of one prior (in the caller's transaction);
    returns the job id."""
    ref = await study_ref(s, study)
    job_id = f"priors-retrieve:{prior.id.hex}:{uuid.uuid4().hex[:8]}"
    job = ppb.PriorsJob(job_id=job_id, study_id=str(study.id), study=_key(ref),
                        action=ppb.PRIORS_ACTION_RETRIEVE, prior_id=str(prior.id))
    await outbox.enqueue(s, topology.subject(JOB_PRIORS), job_id, job)
    await audit.record(s, topology, "priors.retrieve_queued", actor, ref, job_id=job_id,
                       context={"prior_study_instance_uid": prior.study_instance_uid})
    return job_id
