"""Review API routes (docs/review-api.md): worklist, study view, claims, findings, decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth.tokens import Principal
from review_gateway.clients.review import ReviewCallError, ReviewClient
from review_gateway.errors import ERROR_RESPONSES, error_body
from review_gateway.review import models
from review_gateway.review import views as rv
from review_gateway.review.priors import add_priors_routes
from review_gateway.web import access_audit

Action = Literal["accept", "reject", "edit_geometry", "edit_text", "relabel", "ignore",
                 "include_in_draft", "exclude_from_draft"]
Box = list[float]


class DecisionBody(BaseModel):
    action: Action
    expected_version: int = Field(ge=0)
    reason: str = Field(default="", max_length=64)
    note: str = Field(default="", max_length=4000)
    bbox_px: Box | None = Field(default=None, min_length=4, max_length=4)
    label: str = Field(default="", max_length=128)
    text: str = Field(default="", max_length=4000)
    request_id: str = Field(default="", max_length=64)


class NewFindingBody(BaseModel):
    label: str = Field(min_length=1, max_length=128)
    bbox_px: Box = Field(min_length=4, max_length=4)
    series_instance_uid: str = Field(min_length=1, max_length=64)
    sop_instance_uid: str = Field(min_length=1, max_length=64)
    frame: int = Field(default=1, ge=1)
    text: str = Field(default="", max_length=4000)
    request_id: str = Field(default="", max_length=64)


class AccessEventBody(BaseModel):
    type: Literal["overlay_toggled", "finding_selected"]
    finding_id: str = Field(default="", max_length=64)
    visible: bool | None = None


def review_router(principal: Callable[..., Any], review: Callable[[], ReviewClient]
                  ) -> APIRouter:
    """The review routes under /api/v1, every one behind `principal` and facility-scoped."""
    router = APIRouter(prefix="/api/v1", tags=["review"], responses=ERROR_RESPONSES)
    me_dep = Depends(principal)

    @router.get("/studies")
    async def worklist(
        request: Request,
        me: Principal = me_dep,
        state: str = Query(default="", max_length=32),
        modality: str = Query(default="", max_length=16),
        ai_status: str = Query(default="", max_length=16),
        date_from: str = Query(default="", max_length=10),
        date_to: str = Query(default="", max_length=10),
        assigned: Literal["", "me"] = Query(default=""),
        facility: str = Query(default="", max_length=64),
        accession: str = Query(default="", max_length=64),
        q: str = Query(default="", max_length=64,
                       description="patient name (any PN component, case and accents "
                                   "ignored), patient ID or accession; audited"),
        eligible: Literal["", "true", "false"] = Query(default=""),
        sort: str = Query(default="", max_length=32),
        page_size: int = Query(default=0, ge=0, le=500),
        page_token: str = Query(default="", max_length=2048),
    ) -> models.StudyList:
        client = review()
        reply = await client.call(client.stub.ListWorklist, rpb.ListWorklistRequest(
            state=state, modality=modality, ai_status=ai_status,
            date_from=date_from, date_to=date_to, assigned_to_me=assigned == "me",
            facility=facility, accession=accession, eligible=eligible, sort=sort,
            page_size=page_size, page_token=page_token, patient_query=q))
        access_audit.note(request.scope, study_ids=[s.study.study_id for s in reply.studies],
                          count=len(reply.studies))
        return models.StudyList(studies=[rv.study_json(s) for s in reply.studies],
                                next_page_token=reply.next_page_token)

    @router.get("/studies/{study_id}")
    async def study(study_id: str, me: Principal = me_dep) -> models.StudyDetail:
        client = review()
        reply = await client.call(client.stub.GetStudyDetail, rpb.GetStudyDetailRequest(
            study_id=study_id))
        return rv.detail_json(reply)

    def study_action(path: str, rpc: str, request_type: Any) -> None:
        async def act(study_id: str, me: Principal = me_dep) -> models.Study:
            client = review()
            reply = await client.call(getattr(client.stub, rpc),
                                      request_type(study_id=study_id))
            return rv.study_json(reply.study)

        act.__name__ = f"{path}_study"
        router.post(f"/studies/{{study_id}}/{path}", name=f"{path} study",
                    response_model=models.Study)(act)

    study_action("claim", "ClaimStudy", rpb.ClaimStudyRequest)
    study_action("release", "ReleaseStudy", rpb.ReleaseStudyRequest)
    study_action("open", "OpenStudy", rpb.OpenStudyRequest)
    study_action("complete", "CompleteReview", rpb.CompleteReviewRequest)

    @router.post("/studies/{study_id}/access-events", status_code=204,
                 response_class=Response)
    async def access_event(study_id: str, body: AccessEventBody,
                           me: Principal = me_dep) -> Response:
        client = review()
        request = rpb.RecordAccessRequest(study_id=study_id, type=body.type,
                                          finding_id=body.finding_id)
        if body.visible is not None:
            request.visible = body.visible
        await client.call(client.stub.RecordAccess, request)
        return Response(status_code=204)

    async def findings_of(study_id: str, me: Principal,
                          include_hidden: bool = False) -> list[rpb.ReviewFinding]:
        client = review()
        reply = await client.call(client.stub.ListReviewFindings, rpb.ListReviewFindingsRequest(
            study_id=study_id, include_hidden=include_hidden))
        return list(reply.findings)

    @router.get("/studies/{study_id}/findings")
    async def findings(study_id: str, me: Principal = me_dep,
                       include_hidden: bool = False) -> models.FindingList:
        return models.FindingList(findings=[rv.finding_json(f) for f in
                                            await findings_of(study_id, me, include_hidden)])

    @router.post("/studies/{study_id}/findings", status_code=201)
    async def add_finding(study_id: str, body: NewFindingBody,
                          me: Principal = me_dep) -> models.Finding:
        client = review()
        reply = await client.call(client.stub.AddFinding, rpb.AddFindingRequest(
            study_id=study_id, label=body.label, bbox_px=body.bbox_px,
            series_instance_uid=body.series_instance_uid,
            sop_instance_uid=body.sop_instance_uid, frame=body.frame, text=body.text,
            request_id=body.request_id))
        return rv.finding_json(reply.finding)

    @router.post("/studies/{study_id}/findings/{finding_id}/decisions",
                 response_model=models.Finding,
                 responses={409: {"model": models.VersionConflict,
                                  "description": "VERSION_CONFLICT: the finding as it now is"}})
    async def decide(study_id: str, finding_id: str, body: DecisionBody,
                     me: Principal = me_dep) -> models.Finding | JSONResponse:
        client = review()
        try:
            reply = await client.call(client.stub.DecideFinding, rpb.DecideFindingRequest(
                study_id=study_id, finding_id=finding_id,
                action=body.action, expected_version=body.expected_version,
                reason=body.reason, note=body.note, bbox_px=body.bbox_px or [],
                label=body.label, text=body.text, request_id=body.request_id))
        except ReviewCallError as exc:
            if exc.reason != "VERSION_CONFLICT":
                raise
            current = [f for f in await findings_of(study_id, me)
                       if f.finding.finding_id == finding_id]
            conflict = models.VersionConflict(
                **error_body(exc.code, exc.reason, exc.message),
                current=rv.finding_json(current[0]) if current else None)
            return JSONResponse(conflict.model_dump(mode="json"), status_code=409)
        return rv.finding_json(reply.finding)

    @router.get("/studies/{study_id}/findings/{finding_id}/history")
    async def history(study_id: str, finding_id: str, me: Principal = me_dep
                      ) -> models.FindingHistory:
        client = review()
        reply = await client.call(client.stub.ListFindingHistory, rpb.ListFindingHistoryRequest(
            study_id=study_id, finding_id=finding_id))
        return models.FindingHistory(events=[rv.history_json(e) for e in reply.events])

    add_priors_routes(router, me_dep, review)
    return router
