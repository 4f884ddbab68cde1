"""The priors of a study as the review app sees them, and a radiologist's retrieval request;
both only for a study the caller may see (its facility)."""

from __future__ import annotations

import uuid

from sqlalchemy import ScalarSelect, select, update

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, InvalidArgument, NotFound
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility, PriorLookup, PriorStudy, Study
from workflow_svc.identity.access import Caller
from workflow_svc.priors.jobs import enqueue_retrieve, has_pacs
from workflow_svc.study import queries

MAX_PAGE = 50
IN_FLIGHT = ("queued", "retrieving", "retrieved")


def _page(page_size: int, page_token: str) -> tuple[int, int]:
    if page_size < 0 or page_size > MAX_PAGE:
        raise InvalidArgument("INVALID_PAGE_SIZE", f"page_size must be 0..{MAX_PAGE}",
                              page_size=str(page_size))
    offset = 0
    if page_token:
        if not page_token.isdigit() or len(page_token) > 6:
            raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is malformed")
        offset = int(page_token)
    return page_size or MAX_PAGE, offset


def _pb(prior: PriorStudy, retrieved_study: uuid.UUID | None) -> rpb.PriorStudy:
    return rpb.PriorStudy(
        prior_id=str(prior.id), study_instance_uid=prior.study_instance_uid,
        study_date=prior.study_date, description=prior.description,
        modalities=[m for m in prior.modalities.split("\\") if m], accession=prior.accession,
        instance_count=prior.instance_count, retrieve_status=prior.retrieve_status,
        retrieved_count=prior.retrieved_count, last_error=prior.last_error[:500],
        retrieved_study_id=str(retrieved_study) if retrieved_study else "")


def _registered(facility_id: uuid.UUID) -> ScalarSelect[uuid.UUID]:
    """The sidecar's registered study of a prior's StudyInstanceUID in the same facility."""
    return (select(Study.id)
            .where(Study.facility_id == facility_id,
                   Study.study_instance_uid == PriorStudy.study_instance_uid,
                   Study.state.is_not(None))
            .order_by(Study.created_at).limit(1)
            .correlate(PriorStudy).scalar_subquery())


async def list_priors(db: Database, request: rpb.ListPriorsRequest, caller: Caller
                      ) -> rpb.ListPriorsResponse:
    size, offset = _page(request.page_size, request.page_token)
    async with db.read() as s:
        sid = await queries.visible_study_id(s, request.study_id, caller.scope())
        facility_id = (await s.execute(select(Study.facility_id).where(Study.id == sid))
                       ).scalar_one()
        lookup = await s.scalar(select(PriorLookup.status).where(PriorLookup.study_id == sid))
        if lookup is None:
            facility = (await s.execute(select(Facility).where(Facility.id == facility_id))
                        ).scalar_one()
            lookup = "pending" if has_pacs(facility) else "none"
        rows = (await s.execute(
            select(PriorStudy, _registered(facility_id))
            .where(PriorStudy.study_id == sid)
            .order_by(PriorStudy.study_date.desc(), PriorStudy.study_instance_uid)
            .offset(offset).limit(size + 1))).all()
    more = len(rows) > size
    return rpb.ListPriorsResponse(
        priors=[_pb(p, r) for p, r in rows[:size]],
        lookup_status=lookup, next_page_token=str(offset + size) if more else "")


async def retrieve_prior(db: Database, topology: Topology, request: rpb.RetrievePriorRequest,
                         caller: Caller) -> rpb.PriorStudy:
    """Queues a retrieval (C-MOVE, or WADO-RS from a DICOMweb PACS) of the prior unless one
    is queued, running or done (returned as it is); a failed one is tried again.
    Auditors may not (PermissionDenied READ_ONLY_ROLE)."""
    caller.require_writer()
    pid = queries.parse_id(request.prior_id, "prior")
    async with db.unit_of_work() as s:
        sid = await queries.visible_study_id(s, request.study_id, caller.scope())
        prior = (await s.execute(select(PriorStudy).where(
            PriorStudy.id == pid, PriorStudy.study_id == sid).with_for_update())
        ).scalar_one_or_none()
        if prior is None:
            raise NotFound("PRIOR_NOT_FOUND", f"no prior {pid} of this study",
                           prior_id=str(pid))
        study = (await s.execute(select(Study).where(Study.id == sid))).scalar_one()
        facility = (await s.execute(select(Facility).where(
            Facility.id == study.facility_id))).scalar_one()
        if not has_pacs(facility):
            raise FailedPrecondition("NO_PACS", "the facility has no PACS to retrieve from")
        if prior.retrieve_status not in IN_FLIGHT:
            job_id = await enqueue_retrieve(s, topology, study, prior, caller.actor)
            await s.execute(update(PriorStudy).where(PriorStudy.id == pid).values(
                retrieve_status="queued", retrieve_job_id=job_id, last_error=""))
        registered = (await s.execute(select(_registered(study.facility_id)).select_from(
            PriorStudy).where(PriorStudy.id == pid))).scalar_one_or_none()
        await s.refresh(prior)
        return _pb(prior, registered)
