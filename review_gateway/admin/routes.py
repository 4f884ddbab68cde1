"""Operator routes (`/api/v1/admin/...`): dead letters listed (admin, auditor), re-driven and
discarded (admin), each action audited by the workflow service with the operator's name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Query
from google.protobuf import json_format, struct_pb2
from pydantic import BaseModel, Field

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from review_gateway.admin import metrics as metrics_view
from review_gateway.admin import models
from review_gateway.clients.workflow import to_api_error
from review_gateway.errors import ERROR_RESPONSES, ApiError
from review_gateway.review.workflow_views import iso

READERS = ("admin", "auditor")


class DeadLetterSelection(BaseModel):
    """Which dead letters an action takes: sequences, or a facility and/or kind."""

    sequences: list[int] = Field(default_factory=list, max_length=1000)
    facility: str = Field(default="", max_length=64)
    kind: str = Field(default="", max_length=64)
    reason: str = Field(default="", max_length=500)


class FacilityCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict)


class PasswordReset(BaseModel):
    password: str = Field(min_length=1, max_length=1024)


class FacilityChange(BaseModel):
    settings: dict[str, Any]


def _letter_json(d: pb.DeadLetter) -> models.DeadLetter:
    return models.DeadLetter(
        sequence=d.sequence, kind=d.kind, facility=d.facility, accession=d.accession,
        study_instance_uid=d.study_instance_uid, study_id=d.study_id or None, job_id=d.job_id,
        consumer=d.consumer, deliveries=d.deliveries, error_class=d.error_class,
        error_message=d.error_message, original_subject=d.original_subject,
        at=iso(d.at, d.HasField("at")))


def _facility_json(facility: struct_pb2.Struct) -> models.Facility:
    return models.Facility.model_validate(json_format.MessageToDict(facility))


def _require(me: Any, roles: tuple[str, ...]) -> None:
    if getattr(me, "role", "") not in roles:
        raise ApiError(403, "PERMISSION_DENIED", "ADMIN_ONLY",
                       f"this needs the role {' or '.join(roles)}")


def admin_router(principal: Callable[..., Any],
                 channel: Callable[[], grpc.aio.Channel], timeout_s: float = 60.0,
                 metrics_targets: dict[str, str] | None = None) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)

    @router.get("/metrics")
    async def metrics_summary(me: Any = Depends(principal)) -> models.MetricsSummary:
        """Every service's sidecar_* metrics as JSON samples (the dashboard's data)."""
        _require(me, READERS)
        return await metrics_view.collect(metrics_targets or {})

    def ops() -> pb_grpc.OperationsServiceStub:
        return pb_grpc.OperationsServiceStub(channel())

    async def call(method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise to_api_error(err) from None

    @router.get("/dead-letters")
    async def list_dead_letters(
        me: Any = Depends(principal),
        facility: str = Query(default="", max_length=64),
        kind: str = Query(default="", max_length=64),
        page_size: int = Query(default=100, ge=1, le=500),
        page_token: str = Query(default="", max_length=32),
    ) -> models.DeadLetterPage:
        """Jobs that exhausted their retries, with their error context."""
        _require(me, READERS)
        reply = await call(ops().ListDeadLetters, pb.ListDeadLettersRequest(
            filter=pb.DeadLetterFilter(facility=facility, kind=kind), page_size=page_size,
            page_token=page_token))
        return models.DeadLetterPage(dead_letters=[_letter_json(d) for d in reply.dead_letters],
                                     next_page_token=reply.next_page_token)

    def selection(body: DeadLetterSelection) -> pb.DeadLetterFilter:
        return pb.DeadLetterFilter(facility=body.facility, kind=body.kind,
                                   sequences=body.sequences)

    @router.post("/dead-letters/redrive")
    async def redrive(body: DeadLetterSelection,
                      me: Any = Depends(principal)) -> models.Redriven:
        """Puts the selected failed jobs back to work (audited as job.redriven)."""
        _require(me, ("admin",))
        reply = await call(ops().RedriveDeadLetters, pb.RedriveDeadLettersRequest(
            filter=selection(body), operator=me.username))
        return models.Redriven(redriven=list(reply.redriven))

    @router.post("/dead-letters/discard")
    async def discard(body: DeadLetterSelection,
                      me: Any = Depends(principal)) -> models.Discarded:
        """Drops the selected failed jobs (audited as job.discarded with the reason)."""
        _require(me, ("admin",))
        if not body.reason.strip():
            raise ApiError(400, "INVALID_ARGUMENT", "REASON_REQUIRED",
                           "say why the jobs are discarded")
        reply = await call(ops().DiscardDeadLetters, pb.DiscardDeadLettersRequest(
            filter=selection(body), operator=me.username, reason=body.reason))
        return models.Discarded(discarded=list(reply.discarded))

    def facilities() -> pb_grpc.FacilityServiceStub:
        return pb_grpc.FacilityServiceStub(channel())

    def struct(values: dict[str, Any]) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        out.update(values)
        return out

    @router.get("/facilities")
    async def list_facilities(me: Any = Depends(principal)) -> models.FacilityList:
        """Every facility with its onboarding settings (secrets only as set or not)."""
        _require(me, READERS)
        reply = await call(facilities().ListFacilities, pb.ListFacilitiesRequest())
        return models.FacilityList(facilities=[_facility_json(f) for f in reply.facilities])

    @router.post("/facilities", status_code=201)
    async def create_facility(body: FacilityCreate,
                              me: Any = Depends(principal)) -> models.Facility:
        """Onboards a facility; every setting is checked, nothing is stored on an error."""
        _require(me, ("admin",))
        reply = await call(facilities().CreateFacility, pb.CreateFacilityRequest(
            name=body.name, settings=struct(body.settings), operator=me.username))
        return _facility_json(reply.facility)

    @router.patch("/facilities/{name}")
    async def update_facility(name: str, body: FacilityChange,
                              me: Any = Depends(principal)) -> models.Facility:
        """Changes the given settings of a facility (audited as facility.updated)."""
        _require(me, ("admin",))
        reply = await call(facilities().UpdateFacility, pb.UpdateFacilityRequest(
            name=name, settings=struct(body.settings), operator=me.username))
        return _facility_json(reply.facility)

    def accounts() -> pb_grpc.AccountServiceStub:
        return pb_grpc.AccountServiceStub(channel())

    @router.get("/users")
    async def list_users(
        me: Any = Depends(principal),
        page_size: int = Query(default=500, ge=1, le=1000),
        page_token: str = Query(default="", max_length=32),
    ) -> models.AccountList:
        """Every user: role, facility, enabled or disabled, when sessions were last revoked."""
        _require(me, READERS)
        reply = await call(accounts().ListUsers, pb.ListUsersRequest(
            page_size=page_size, page_token=page_token))
        return models.AccountList(users=[models.Account(
            username=a.username, role=a.role, facility=a.facility or None, disabled=a.disabled,
            created_at=iso(a.created_at, a.HasField("created_at")),
            disabled_at=iso(a.disabled_at, a.HasField("disabled_at")),
            sessions_revoked_at=iso(a.sessions_revoked_at, a.HasField("sessions_revoked_at")))
            for a in reply.users], next_page_token=reply.next_page_token)

    @router.post("/users/{name}/disable")
    async def disable_user(name: str, me: Any = Depends(principal)) -> models.AccountChanged:
        """Refuses the user's logins and, within the revocation cache time, their sessions
        (audited as user.disabled); the last enabled admin cannot be disabled (409 LAST_ADMIN)."""
        _require(me, ("admin",))
        reply = await call(accounts().DisableUser, pb.DisableUserRequest(username=name))
        return models.AccountChanged(username=name, changed=reply.changed)

    @router.post("/users/{name}/enable")
    async def enable_user(name: str, me: Any = Depends(principal)) -> models.AccountChanged:
        """Lets a disabled user log in again (audited as user.enabled)."""
        _require(me, ("admin",))
        reply = await call(accounts().EnableUser, pb.EnableUserRequest(username=name))
        return models.AccountChanged(username=name, changed=reply.changed)

    @router.post("/users/{name}/revoke-sessions")
    async def revoke_user_sessions(name: str, me: Any = Depends(principal)
                                   ) -> models.AccountChanged:
        """Ends every session of the user (audited as user.sessions_revoked)."""
        _require(me, ("admin",))
        await call(accounts().RevokeUserSessions, pb.RevokeUserSessionsRequest(username=name))
        return models.AccountChanged(username=name, changed=True)

    @router.post("/users/{name}/reset-password")
    async def reset_user_password(name: str, body: PasswordReset, me: Any = Depends(principal)
                                  ) -> models.AccountChanged:
        """Sets a new password and ends every session of the user (audited as
        user.password_reset, never the password)."""
        _require(me, ("admin",))
        await call(accounts().ResetUserPassword, pb.ResetUserPasswordRequest(
            username=name, new_password=body.password))
        return models.AccountChanged(username=name, changed=True)

    return router
