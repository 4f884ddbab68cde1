"""ReviewService over gRPC: the caller is the verified user of the call (its token, see
sidecar_core.security.user_auth); delegates to the review domain modules."""

from __future__ import annotations

from datetime import UTC
from typing import TypeAlias

import grpc

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rpb_grpc
from sidecar_core.db import Database
from sidecar_core.errors import FailedPrecondition, PermissionDenied
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.session_tokens import USE_VIEWER_CODE, KeySet
from sidecar_core.security.user_auth import require_user
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors
from workflow_svc.identity import handover, sessions, sso
from workflow_svc.identity.access import current_caller
from workflow_svc.identity.sessions import LoginLimits
from workflow_svc.priors import views as priors
from workflow_svc.review import actions as review_actions
from workflow_svc.review import decisions, phi_access, worklist

SERVICE_NAME = rpb.DESCRIPTOR.services_by_name["ReviewService"].full_name
Ctx: TypeAlias = grpc.aio.ServicerContext



class ReviewServicer(rpb_grpc.ReviewServiceServicer):
    """Sessions, worklist, claims and decisions of the review app."""

    def __init__(self, db: Database, topology: Topology, limits: LoginLimits,
                 keys: KeySet | None = None) -> None:
        self.db = db
        self.topology = topology
        self.limits = limits
        self.keys = keys

    @handle_errors
    async def Login(self, request: rpb.LoginRequest, context: Ctx) -> rpb.LoginResponse:
        user = await sessions.login(self.db, self.topology, request.username, request.password,
                                    request.client_address, self.limits,
                                    session_id=request.session_id[:64])
        return rpb.LoginResponse(user_id=str(user.user_id), username=user.username,
                                 role=user.role, facilities=list(user.facilities))

    @handle_errors
    async def SsoLogin(self, request: rpb.SsoLoginRequest, context: Ctx
                       ) -> rpb.SsoLoginResponse:
        user = await sso.login(self.db, self.topology, request.issuer, request.subject,
                               request.username, request.role, list(request.facilities),
                               request.client_address, request.refused_reason,
                               session_id=request.session_id[:64])
        return rpb.SsoLoginResponse(user_id=str(user.user_id), username=user.username,
                                    role=user.role, facilities=list(user.facilities))

    @handle_errors
    async def RevokeSession(self, request: rpb.RevokeSessionRequest,
                            context: Ctx) -> rpb.RevokeSessionResponse:
        caller, user = current_caller(), require_user()
        if user.jti and request.jti != user.jti:  # a user logs out their own session only
            raise PermissionDenied("NOT_YOUR_SESSION",
                                   "a session token may revoke only itself")
        await sessions.revoke(self.db, self.topology, request.jti,
                              request.expires_at.ToDatetime(tzinfo=UTC), caller.user_uuid,
                              caller.actor)
        return rpb.RevokeSessionResponse()

    @handle_errors
    async def RedeemViewerCode(self, request: rpb.RedeemViewerCodeRequest,
                               context: Ctx) -> rpb.RedeemViewerCodeResponse:
        caller, user = current_caller(), require_user()
        if user.use != USE_VIEWER_CODE or request.jti != user.jti:
            raise PermissionDenied("NOT_THIS_CODE",
                                   "a viewer hand-over code is redeemed with itself only")
        await handover.redeem(
            self.db, self.topology, jti=request.jti,
            expires_at=request.expires_at.ToDatetime(tzinfo=UTC), user_id=caller.user_uuid,
            actor=caller.actor, study_uid=user.study,
            facility=user.facilities[0] if user.facilities else "",
            address=request.client_address)
        return rpb.RedeemViewerCodeResponse()

    @handle_errors
    async def CheckSession(self, request: rpb.CheckSessionRequest,
                           context: Ctx) -> rpb.CheckSessionResponse:
        reason = await sessions.is_revoked(self.db, request.jti, request.user_id,
                                           request.issued_at)
        return rpb.CheckSessionResponse(revoked=bool(reason), reason=reason)

    @handle_errors
    async def ListWorklist(self, request: rpb.ListWorklistRequest,
                           context: Ctx) -> rpb.ListWorklistResponse:
        return await worklist.list_worklist(self.db, request, current_caller(), self.topology)

    @handle_errors
    async def GetStudyDetail(self, request: rpb.GetStudyDetailRequest,
                             context: Ctx) -> rpb.GetStudyDetailResponse:
        return await worklist.get_detail(self.db, request.study_id, current_caller())

    @handle_errors
    async def ClaimStudy(self, request: rpb.ClaimStudyRequest,
                         context: Ctx) -> rpb.ClaimStudyResponse:
        return rpb.ClaimStudyResponse(study=await review_actions.claim(
            self.db, self.topology, request.study_id, current_caller()))

    @handle_errors
    async def ReleaseStudy(self, request: rpb.ReleaseStudyRequest,
                           context: Ctx) -> rpb.ReleaseStudyResponse:
        return rpb.ReleaseStudyResponse(study=await review_actions.release(
            self.db, self.topology, request.study_id, current_caller()))

    @handle_errors
    async def OpenStudy(self, request: rpb.OpenStudyRequest, context: Ctx) -> rpb.OpenStudyResponse:
        return rpb.OpenStudyResponse(study=await review_actions.open_study(
            self.db, self.topology, request.study_id, current_caller()))

    @handle_errors
    async def CompleteReview(self, request: rpb.CompleteReviewRequest,
                             context: Ctx) -> rpb.CompleteReviewResponse:
        return rpb.CompleteReviewResponse(study=await review_actions.complete(
            self.db, self.topology, request.study_id, current_caller()))

    @handle_errors
    async def RecordAccess(self, request: rpb.RecordAccessRequest,
                           context: Ctx) -> rpb.RecordAccessResponse:
        await review_actions.record_access(self.db, self.topology, request,
                                           current_caller())
        return rpb.RecordAccessResponse()

    @handle_errors
    async def RecordPhiAccess(self, request: rpb.RecordPhiAccessRequest,
                              context: Ctx) -> rpb.RecordPhiAccessResponse:
        if self.keys is None:
            raise FailedPrecondition("NO_TOKEN_KEYS", "this server cannot verify user tokens")
        return rpb.RecordPhiAccessResponse(recorded=await phi_access.record(
            self.db, self.topology, self.keys, request.accesses))

    @handle_errors
    async def ListReviewFindings(self, request: rpb.ListReviewFindingsRequest,
                                 context: Ctx) -> rpb.ListReviewFindingsResponse:
        return rpb.ListReviewFindingsResponse(findings=await decisions.list_findings(
            self.db, request.study_id, current_caller(), request.include_hidden))

    @handle_errors
    async def DecideFinding(self, request: rpb.DecideFindingRequest,
                            context: Ctx) -> rpb.DecideFindingResponse:
        return rpb.DecideFindingResponse(finding=await decisions.decide(
            self.db, self.topology, request, current_caller()))

    @handle_errors
    async def AddFinding(self, request: rpb.AddFindingRequest,
                         context: Ctx) -> rpb.AddFindingResponse:
        return rpb.AddFindingResponse(finding=await decisions.add_finding(
            self.db, self.topology, request, current_caller()))

    @handle_errors
    async def ListFindingHistory(self, request: rpb.ListFindingHistoryRequest,
                                 context: Ctx) -> rpb.ListFindingHistoryResponse:
        return rpb.ListFindingHistoryResponse(events=await decisions.history(
            self.db, request.study_id, request.finding_id, current_caller()))

    @handle_errors
    async def ListPriors(self, request: rpb.ListPriorsRequest,
                         context: Ctx) -> rpb.ListPriorsResponse:
        return await priors.list_priors(self.db, request, current_caller())

    @handle_errors
    async def RetrievePrior(self, request: rpb.RetrievePriorRequest,
                            context: Ctx) -> rpb.RetrievePriorResponse:
        return rpb.RetrievePriorResponse(prior=await priors.retrieve_prior(
            self.db, self.topology, request, current_caller()))


def register(server: GrpcServer, db: Database, topology: Topology,
             limits: LoginLimits | None = None, keys: KeySet | None = None) -> ReviewServicer:
    """Adds the ReviewService (and its health name) to a GrpcServer; `keys` verify the tokens
    of recorded PHI accesses."""
    servicer = ReviewServicer(db, topology, limits or LoginLimits(), keys)
    server.register(rpb_grpc.add_ReviewServiceServicer_to_server, servicer, [SERVICE_NAME])
    return servicer



