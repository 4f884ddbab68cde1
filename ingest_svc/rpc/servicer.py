"""IngestService over gRPC: thin mapping between protobuf and the Receiver domain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ingest_svc.rpc.query_servicer import QueryMethods
from ingest_svc.study.completion import CompletionTracker
from ingest_svc.study.receive import Outcome, Receiver, ReceiveResult
from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from sidecar_core import audit
from sidecar_core.dicom.uids import uid_problem
from sidecar_core.errors import InvalidArgument, PermissionDenied
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.authz import current_peer
from sidecar_core.security.enforcement import DENIED_EVENT
from sidecar_core.security.user_auth import current_user
from sidecar_core.serving import idempotency
from sidecar_core.serving.grpc_server import handle_errors

_OUTCOMES = {
    Outcome.STORED: pb.INSTANCE_OUTCOME_STORED,
    Outcome.DUPLICATE: pb.INSTANCE_OUTCOME_DUPLICATE,
    Outcome.REJECTED: pb.INSTANCE_OUTCOME_REJECTED,
}


def _result(index: int, source_ref: str, r: ReceiveResult) -> pb.InstanceResult:
    return pb.InstanceResult(
        index=index,
        source_ref=source_ref,
        outcome=_OUTCOMES[r.outcome],
        reason=r.reason,
        message=r.message,
        study_instance_uid=r.study_instance_uid,
        series_instance_uid=r.series_instance_uid,
        sop_instance_uid=r.sop_instance_uid,
        accession=r.accession,
    )


def _count(results: list[pb.InstanceResult]) -> dict[str, int]:
    return {
        "stored_count": sum(r.outcome == pb.INSTANCE_OUTCOME_STORED for r in results),
        "duplicate_count": sum(r.outcome == pb.INSTANCE_OUTCOME_DUPLICATE for r in results),
        "rejected_count": sum(r.outcome == pb.INSTANCE_OUTCOME_REJECTED for r in results),
    }


class IngestServicer(QueryMethods, pb_grpc.IngestServiceServicer):
    def __init__(self, receiver: Receiver, completion: CompletionTracker,
                 topology: Topology | None = None) -> None:
        self.receiver = receiver
        self.completion = completion
        self.topology = topology or receiver.topology

    async def _facility(self, named: str, method: str, where: str = "the request") -> str:
        """The facility a request acts on: a PACS adapter's comes from its certificate; the
        gateway's (STOW-RS) must be one its verified user sees. Another is PERMISSION_DENIED,
        audited. An operator, and the workflow storing a prior read by WADO-RS (the facility
        of the study whose prior it is), must name one."""
        peer = current_peer()
        if peer is not None and peer.kind == "adapter":
            if named and named != peer.facility:
                await self._deny(method, peer.uri, named, "facility outside the adapter's "
                                 "certificate", f"{peer} may not send for facility")
            return peer.facility
        if not named:
            raise InvalidArgument("MISSING_FACILITY", "facility is required" if where ==
                                  "the request" else f"{where} must name the facility")
        user = current_user()
        if user is not None and not user.sees(named):
            await self._deny(method, peer.uri if peer else "", named,
                             "facility outside the user's scope",
                             f"user {user.username} may not store into facility")
        return named

    async def _deny(self, method: str, identity: str, named: str, reason: str,
                    message: str) -> None:
        async with self.receiver.db.unit_of_work() as s:
            await audit.record(s, self.topology, DENIED_EVENT, "ingest_svc", context={
                "method": method, "identity": identity, "facility": named[:64],
                "reason": reason})
        raise PermissionDenied("FACILITY_NOT_ALLOWED", f"{message} {named[:64]!r}",
                               facility=named[:64])

    @handle_errors
    async def UploadInstances(
        self,
        request_iterator: AsyncIterator[pb.UploadInstancesRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadInstancesResponse:
        results: list[pb.InstanceResult] = []
        facility = request_id = ""
        async for i, req in _enumerate(request_iterator):
            if i == 0:
                facility, request_id = await self._facility(req.facility, "UploadInstances",
                                                            "the first message"), req.request_id
                earlier = await idempotency.recall(self.receiver.db, "UploadInstances",
                                                   request_id, facility)
                if earlier is not None:
                    return pb.UploadInstancesResponse.FromString(earlier)
            elif req.facility and req.facility != facility:
                await self._facility(req.facility, "UploadInstances", f"message {i + 1}")
                raise InvalidArgument("FACILITY_CHANGED", f"message {i + 1} names facility "
                                      f"{req.facility!r}; one stream carries one facility")
            r = await self.receiver.receive(facility, req.dicom, "grpc", req.source_ref)
            results.append(_result(i, req.source_ref, r))
        response = pb.UploadInstancesResponse(results=results, **_count(results))
        await idempotency.remember(
            self.receiver.db, "UploadInstances", request_id, response.SerializeToString(),
            facility)
        return response

    @handle_errors
    async def IngestInstances(
        self, request: pb.IngestInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestInstancesResponse:
        facility = await self._facility(request.facility, "IngestInstances")
        earlier = await idempotency.recall(self.receiver.db, "IngestInstances",
                                           request.request_id, facility)
        if earlier is not None:
            return pb.IngestInstancesResponse.FromString(earlier)
        results = []
        for i, item in enumerate(request.items):
            r = await self.receiver.receive(facility, item.dicom, "grpc", item.source_ref)
            results.append(_result(i, item.source_ref, r))
        response = pb.IngestInstancesResponse(results=results, **_count(results))
        await idempotency.remember(
            self.receiver.db, "IngestInstances", request.request_id, response.SerializeToString(),
            facility)
        return response

    @handle_errors
    async def CompleteStudy(
        self, request: pb.CompleteStudyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteStudyResponse:
        problem = uid_problem(request.study_instance_uid)
        if problem:
            raise InvalidArgument(
                "INVALID_UID",
                f"study_instance_uid {problem}",
                study_instance_uid=request.study_instance_uid[:80],
            )
        facility = await self._facility(request.facility, "CompleteStudy")
        done = await self.completion.complete_now(
            facility, request.study_instance_uid, request.accession
        )
        return pb.CompleteStudyResponse(completed_count=len(done), study_ids=[str(d) for d in done])


async def _enumerate(it: AsyncIterator[pb.UploadInstancesRequest]):  # type: ignore[no-untyped-def]
    i = 0
    async for item in it:
        yield i, item
        i += 1
