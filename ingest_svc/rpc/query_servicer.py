"""QIDO-RS search RPCs of IngestService (mixed into IngestServicer): thin protobuf mapping."""

from __future__ import annotations

import json
from typing import Any

import grpc

from ingest_svc.dicomweb import qido
from ingest_svc.study.receive import Receiver
from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from sidecar_core.errors import InvalidArgument
from sidecar_core.security.user_auth import require_user
from sidecar_core.serving.grpc_server import handle_errors


async def _search(receiver: Receiver, level: str, request: Any) -> tuple[list[str], str]:
    try:
        query = qido.parse_query(
            level, [(p.key, p.value) for p in request.match], list(request.include_fields),
            require_user().scope(), request.page_size, request.page_token,
            getattr(request, "study_instance_uid", ""), getattr(request, "series_instance_uid", ""),
            request.fuzzy_matching)
    except qido.QueryError as exc:
        raise InvalidArgument(exc.reason, exc.message) from exc
    results, token = await qido.search(receiver.db, query)
    return [json.dumps(r, separators=(",", ":")) for r in results], token


class QueryMethods:
    """SearchStudies / SearchSeries / SearchInstances; needs `self.receiver`."""

    receiver: Receiver

    @handle_errors
    async def SearchStudies(self, request: pb.SearchStudiesRequest,
                            context: grpc.aio.ServicerContext) -> pb.SearchStudiesResponse:
        found, token = await _search(self.receiver, "study", request)
        return pb.SearchStudiesResponse(dicom_json=found, next_page_token=token)

    @handle_errors
    async def SearchSeries(self, request: pb.SearchSeriesRequest,
                           context: grpc.aio.ServicerContext) -> pb.SearchSeriesResponse:
        found, token = await _search(self.receiver, "series", request)
        return pb.SearchSeriesResponse(dicom_json=found, next_page_token=token)

    @handle_errors
    async def SearchInstances(self, request: pb.SearchInstancesRequest,
                              context: grpc.aio.ServicerContext) -> pb.SearchInstancesResponse:
        found, token = await _search(self.receiver, "instance", request)
        return pb.SearchInstancesResponse(dicom_json=found, next_page_token=token)
