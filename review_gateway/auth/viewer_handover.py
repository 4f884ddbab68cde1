"""The OHIF hand-over without the session token: a one-time code (POST, by the signed-in user
for a study they may see) that the viewer exchanges once for a read-only DICOMweb token of that
one study; no session token ever travels in a URL."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.auth import forwarding, tokens
from review_gateway.clients.review import ReviewClient
from review_gateway.errors import ERROR_RESPONSES, ApiError, ApiModel
from review_gateway.settings import GatewaySettings


class HandoverRequest(BaseModel):
    study_id: str = Field(min_length=1, max_length=64)


class Handover(ApiModel):
    """A one-time code for the OHIF viewer: valid `expires_in` seconds, exchanged once."""

    code: str
    expires_in: int
    study_instance_uid: str


class ExchangeRequest(BaseModel):
    code: str = Field(min_length=1, max_length=4096)


class ViewerToken(ApiModel):
    """The viewer's DICOMweb bearer token: read-only, for one study, short-lived."""

    access_token: str
    token_type: str
    expires_in: int
    study_instance_uid: str


def _refused(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", "INVALID_CODE", message)


def handover_router(settings: GatewaySettings, keys: tokens.KeySet,
                    principal: Callable[..., Any], review: Callable[[], ReviewClient],
                    check_revoked: Callable[[tokens.Principal], Awaitable[None]]
                    ) -> APIRouter:
    router = APIRouter(prefix="/api/v1/viewer", tags=["viewer"], responses=ERROR_RESPONSES)
    # Codes this replica saw refused as spent (jti → expiry), the refusal audited by the
    # workflow service: later replays are refused here without a call, so a flood of replays
    # costs one refusal audit per code and replica.
    spent: dict[str, int] = {}

    def remember(code: tokens.Principal) -> None:
        now = time.time()
        if len(spent) > 10_000:
            for jti in [j for j, exp in spent.items() if exp <= now]:
                del spent[jti]
        if len(spent) <= 10_000:
            spent[code.jti] = code.expires_at

    def mint(me: tokens.Principal, use: str, ttl: int, study: str, facility: str,
             session_jti: str) -> str:
        # The scope is the study's facility alone, whatever the user's role sees.
        return tokens.issue(keys, user_id=me.user_id, username=me.username, role=me.role,
                            facilities=[facility], ttl_s=ttl, claims={
                                "use": use, "study": study, "sid": session_jti,
                                "fac": [facility], "fac_all": False})

    @router.post("/handover")
    async def handover(body: HandoverRequest,
                       me: tokens.Principal = Depends(principal)) -> Handover:
        """A one-time code for opening `study_id` in the OHIF viewer (the caller must be
        allowed the study: 404 otherwise)."""
        client = review()
        detail = await client.call(client.stub.GetStudyDetail,
                                   rpb.GetStudyDetailRequest(study_id=body.study_id))
        study = detail.study.study
        ttl = settings.viewer_code_ttl_s
        code = mint(me, tokens.USE_VIEWER_CODE, ttl, study.study_instance_uid, study.facility,
                    me.jti)
        return Handover(code=code, expires_in=ttl, study_instance_uid=study.study_instance_uid)

    @router.post("/token")
    async def exchange(body: ExchangeRequest, request: Request) -> ViewerToken:
        """The viewer's DICOMweb token for a hand-over code; the code works once (401
        INVALID_CODE for an unknown, expired or used one, or one of a logged-out session)."""
        try:
            code = tokens.verify(keys, body.code)
        except ApiError:
            raise _refused("the hand-over code is invalid or expired") from None
        if code.use != tokens.USE_VIEWER_CODE or not code.study or not code.session_jti:
            raise _refused("this is not a viewer hand-over code")
        if code.jti in spent:
            raise _refused("the hand-over code was already used")
        try:
            await check_revoked(code)  # the code's session was not logged out
        except ApiError as exc:
            if exc.status >= 500:
                raise
            raise _refused("the session of this hand-over code has ended") from None
        client = review()
        spend = rpb.RedeemViewerCodeRequest(
            jti=code.jti, client_address=request.client.host if request.client else "")
        spend.expires_at.FromDatetime(datetime.fromtimestamp(code.expires_at, UTC))
        with forwarding.acting_for(code):
            try:
                await client.call(client.stub.RedeemViewerCode, spend)
            except ApiError as exc:
                if exc.status in (401, 403, 409):
                    remember(code)
                    raise _refused("the hand-over code was already used or its session "
                                   "ended") from None
                raise
        ttl = settings.viewer_token_ttl_s
        facility = code.facilities[0] if code.facilities else ""
        token = mint(code, tokens.USE_VIEWER, ttl, code.study, facility, code.session_jti)
        return ViewerToken(access_token=token, token_type="bearer", expires_in=ttl,
                           study_instance_uid=code.study)

    return router
