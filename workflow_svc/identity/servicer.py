"""AccountService over gRPC: the admin page's account lifecycle, for the verified caller."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import grpc
from google.protobuf import timestamp_pb2

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.errors import InvalidArgument, PermissionDenied
from sidecar_core.messaging.subjects import Topology
from sidecar_core.serving.grpc_server import GrpcServer, handle_errors
from workflow_svc.identity import accounts
from workflow_svc.identity.access import Caller, current_caller
from workflow_svc.identity.users import ADMIN

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AccountService"].full_name
VIA = "api"
Ctx: TypeAlias = grpc.aio.ServicerContext


def _ts(at: datetime | None) -> timestamp_pb2.Timestamp | None:
    if at is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


def _admin() -> Caller:
    """The caller, who must be an admin: the operator the audit names."""
    caller = current_caller()
    if caller.role != ADMIN:
        raise PermissionDenied("ADMIN_ONLY", "changing accounts needs the role admin",
                               role=caller.role)
    return caller


class AccountServicer(pb_grpc.AccountServiceServicer):
    def __init__(self, db: Database, topology: Topology) -> None:
        self.db = db
        self.topology = topology

    @handle_errors
    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx
                        ) -> pb.ListUsersResponse:
        size = request.page_size or 500
        if not 1 <= size <= 1000:
            raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must be 1 to 1000")
        try:
            start = int(request.page_token or "0")
        except ValueError:
            raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one of ours") from None
        every = await accounts.list_accounts(self.db)
        page = every[start:start + size]
        more = start + size < len(every)
        return pb.ListUsersResponse(users=[pb.Account(
            username=a.username, role=a.role, facility=a.facility,
            disabled=a.disabled_at is not None, created_at=_ts(a.created_at),
            disabled_at=_ts(a.disabled_at), sessions_revoked_at=_ts(a.sessions_revoked_at))
            for a in page], next_page_token=str(start + size) if more else "")

    @handle_errors
    async def DisableUser(self, request: pb.DisableUserRequest, context: Ctx
                          ) -> pb.DisableUserResponse:
        changed = await accounts.set_disabled(self.db, self.topology, request.username, True,
                                              _admin().username, via=VIA)
        return pb.DisableUserResponse(changed=changed)

    @handle_errors
    async def EnableUser(self, request: pb.EnableUserRequest, context: Ctx
                         ) -> pb.EnableUserResponse:
        changed = await accounts.set_disabled(self.db, self.topology, request.username, False,
                                              _admin().username, via=VIA)
        return pb.EnableUserResponse(changed=changed)

    @handle_errors
    async def ResetUserPassword(self, request: pb.ResetUserPasswordRequest, context: Ctx
                                ) -> pb.ResetUserPasswordResponse:
        await accounts.reset_password(self.db, self.topology, request.username,
                                      request.new_password, _admin().username, via=VIA)
        return pb.ResetUserPasswordResponse()

    @handle_errors
    async def RevokeUserSessions(self, request: pb.RevokeUserSessionsRequest, context: Ctx
                                 ) -> pb.RevokeUserSessionsResponse:
        await accounts.revoke_sessions(self.db, self.topology, request.username,
                                       _admin().username, via=VIA)
        return pb.RevokeUserSessionsResponse()


def register(server: GrpcServer, db: Database, topology: Topology) -> None:
    server.register(pb_grpc.add_AccountServiceServicer_to_server,
                    AccountServicer(db, topology), [SERVICE_NAME])
