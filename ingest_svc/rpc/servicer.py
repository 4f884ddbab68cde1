"""IngestService over gRPC: thin mapping between protobuf and the Receiver domain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ingest_svc.rpc.query_servicer import QueryMethods
from ingest_svc.study.completion import CompletionTracker
from ingest_svc.study.receive import Outcome, Receiver, ReceiveResult
from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from sidecar_core.dicom.uids import uid_problem
from sidecar_core.errors import InvalidArgument
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
    def __init__(self, receiver: Receiver, completion: CompletionTracker) -> None:
        self.receiver = receiver
        self.completion = completion

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
                facility, request_id = req.facility, req.request_id
                if not facility:
                    raise InvalidArgument(
                        "MISSING_FACILITY", "the first message must name the facility"
                    )
                earlier = await idempotency.recall(self.receiver.db, "UploadInstances", request_id)
                if earlier is not None:
                    return pb.UploadInstancesResponse.FromString(earlier)
            r = await self.receiver.receive(
                req.facility or facility, req.dicom, "grpc", req.source_ref
            )
            results.append(_result(i, req.source_ref, r))
        response = pb.UploadInstancesResponse(results=results, **_count(results))
        await idempotency.remember(
            self.receiver.db, "UploadInstances", request_id, response.SerializeToString()
        )
        return response

    @handle_errors
    async def IngestInstances(
        self, request: pb.IngestInstancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestInstancesResponse:
        if not request.facility:
            raise InvalidArgument("MISSING_FACILITY", "facility is required")
        earlier = await idempotency.recall(self.receiver.db, "IngestInstances", request.request_id)
        if earlier is not None:
            return pb.IngestInstancesResponse.FromString(earlier)
        results = []
        for i, item in enumerate(request.items):
            r = await self.receiver.receive(request.facility, item.dicom, "grpc", item.source_ref)
            results.append(_result(i, item.source_ref, r))
        response = pb.IngestInstancesResponse(results=results, **_count(results))
        await idempotency.remember(
            self.receiver.db, "IngestInstances", request.request_id, response.SerializeToString()
        )
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
        if not request.facility:
            raise InvalidArgument("MISSING_FACILITY", "facility is required")
        done = await self.completion.complete_now(
            request.facility, request.study_instance_uid, request.accession
        )
        return pb.CompleteStudyResponse(completed_count=len(done), study_ids=[str(d) for d in done])


async def _enumerate(it: AsyncIterator[pb.UploadInstancesRequest]):  # type: ignore[no-untyped-def]
    i = 0
    async for item in it:
        yield i, item
        i += 1
