"""Review API routes of prior studies (docs/priors.md): the list, and a retrieval on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query
from pydantic import Field

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth.tokens import Principal
from review_gateway.clients.review import ReviewClient
from review_gateway.review.models import ApiModel


class Prior(ApiModel):
    """An earlier study of the same patient at the facility's PACS."""

    prior_id: str
    study_instance_uid: str
    study_date: str = Field(description="YYYYMMDD as the PACS gave it, or empty")
    description: str
    modalities: list[str]
    accession: str
    instance_count: int
    retrieve_status: str = Field(description="'' (not requested), queued, retrieving, "
                                 "retrieved or failed")
    retrieved_count: int
    last_error: str
    retrieved_study_id: str = Field(description="the sidecar's study of the retrieved objects "
                                    "once registered, or empty")


class PriorList(ApiModel):
    priors: list[Prior]
    lookup_status: str = Field(description="found, failed, none (no PACS) or pending")
    next_page_token: str


def prior_json(p: rpb.PriorStudy) -> Prior:
    return Prior(prior_id=p.prior_id, study_instance_uid=p.study_instance_uid,
                 study_date=p.study_date, description=p.description,
                 modalities=list(p.modalities), accession=p.accession,
                 instance_count=p.instance_count, retrieve_status=p.retrieve_status,
                 retrieved_count=p.retrieved_count, last_error=p.last_error,
                 retrieved_study_id=p.retrieved_study_id)


def add_priors_routes(router: APIRouter, me_dep: Any,
                      review: Callable[[], ReviewClient]) -> None:
    @router.get("/studies/{study_id}/priors")
    async def priors(study_id: str, me: Principal = me_dep,
                     page_size: int = Query(default=0, ge=0, le=50),
                     page_token: str = Query(default="", max_length=16)) -> PriorList:
        client = review()
        reply = await client.call(client.stub.ListPriors, rpb.ListPriorsRequest(
            study_id=study_id, page_size=page_size, page_token=page_token))
        return PriorList(priors=[prior_json(p) for p in reply.priors],
                         lookup_status=reply.lookup_status,
                         next_page_token=reply.next_page_token)

    @router.post("/studies/{study_id}/priors/{prior_id}/retrieve", status_code=202)
    async def retrieve(study_id: str, prior_id: str, me: Principal = me_dep) -> Prior:
        client = review()
        reply = await client.call(client.stub.RetrievePrior, rpb.RetrievePriorRequest(
            study_id=study_id, prior_id=prior_id))
        return prior_json(reply.prior)
