"""Draft API (docs/report-loop.md): generate, read, edit, accept an assistive draft."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from protos.sidecar.workflow.v1 import report_service_pb2 as pb
from protos.sidecar.workflow.v1 import report_service_pb2_grpc as pb_grpc
from review_gateway.auth.tokens import Principal
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES
from review_gateway.review.models import Draft, DraftGenerated, DraftSentence, DraftVersions

ASSISTIVE_NOTICE = "Assistive draft: not a report; the official report is written in the RIS."
GENERATE_TIMEOUT_S = 330.0  # above the longest LLM timeout a facility may set, with retries


class EditBody(BaseModel):
    expected_version: int = Field(ge=1)
    text: str = Field(min_length=1, max_length=20000)


class AcceptBody(BaseModel):
    expected_version: int = Field(ge=1)


def draft_json(d: pb.Draft) -> Draft:
    return Draft(
        id=d.draft_id, study_id=d.study_id, version=d.version, status=d.status,
        generator=d.generator, text=d.text, author=d.author,
        sentences=[DraftSentence(text=x.text, finding_ids=list(x.finding_ids))
                   for x in d.sentences],
        assistive=True, notice=ASSISTIVE_NOTICE, trace_id=d.trace_id,
        created_at=d.created_at.ToDatetime(tzinfo=UTC).isoformat()
        if d.HasField("created_at") else None,
    )


def draft_router(principal: Callable[..., Any], channel: Callable[[], grpc.aio.Channel],
                 timeout_s: float) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["drafts"], responses=ERROR_RESPONSES)
    me_dep = Depends(principal)

    def client(timeout: float = timeout_s) -> tuple[ReviewClient, pb_grpc.ReportServiceStub]:
        ch = channel()
        return ReviewClient(ch, timeout), pb_grpc.ReportServiceStub(ch)

    @router.post("/studies/{study_id}/draft")
    async def generate(study_id: str, me: Principal = me_dep) -> DraftGenerated:
        """Generates a new draft version; `llm_failed` (with `llm_error`) when the drafter
        failed: the review goes on without a draft."""
        rpc, stub = client(GENERATE_TIMEOUT_S)
        reply = await rpc.call(stub.GenerateDraft, pb.GenerateDraftRequest(
            study_id=study_id))
        return DraftGenerated(draft=draft_json(reply.draft) if reply.HasField("draft") else None,
                              llm_failed=reply.llm_failed, llm_error=reply.llm_error)

    @router.get("/studies/{study_id}/draft")
    async def get(study_id: str, me: Principal = me_dep) -> DraftVersions:
        rpc, stub = client()
        reply = await rpc.call(stub.GetDraft, pb.GetDraftRequest(study_id=study_id))
        versions = [draft_json(v) for v in reply.versions]
        return DraftVersions(current=versions[-1] if versions else None, versions=versions,
                             llm_error=reply.llm_error)

    @router.put("/studies/{study_id}/draft")
    async def edit(study_id: str, body: EditBody, me: Principal = me_dep) -> Draft:
        rpc, stub = client()
        reply = await rpc.call(stub.EditDraft, pb.EditDraftRequest(
            study_id=study_id, expected_version=body.expected_version,
            text=body.text))
        return draft_json(reply.draft)

    @router.post("/studies/{study_id}/draft/accept")
    async def accept(study_id: str, body: AcceptBody, me: Principal = me_dep
                     ) -> Draft:
        rpc, stub = client()
        reply = await rpc.call(stub.AcceptDraft, pb.AcceptDraftRequest(
            study_id=study_id, expected_version=body.expected_version))
        return draft_json(reply.draft)

    return router
