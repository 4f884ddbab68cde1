"""DICOMweb edge: STOW-RS into the Ingest RPC and QIDO-RS searches, behind the gateway's auth.

Mount: app.include_router(dicomweb_router(principal, ingest_stub), prefix="/dicomweb")
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from review_gateway.dicomweb import stow
from review_gateway.dicomweb.schemas import DICOM_JSON, DicomDataset, DicomDatasets, dicom_json
from sidecar_core.dicom.uids import uid_problem

log = logging.getLogger(__name__)
_BATCH_BYTES = 64 * 1024 * 1024
_ACCEPTABLE = ("application/dicom+json", "application/json", "application/*", "*/*")
_HTTP_OF_GRPC = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.PERMISSION_DENIED: 403,
                 grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503,
                 grpc.StatusCode.DEADLINE_EXCEEDED: 503, grpc.StatusCode.RESOURCE_EXHAUSTED: 503}
MAX_LIMIT = 1000  # the most results one QIDO-RS page may ask for
_OK = (pb.INSTANCE_OUTCOME_STORED, pb.INSTANCE_OUTCOME_DUPLICATE)


def _error(status: int, reason: str, message: str) -> JSONResponse:
    code = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 406: "INVALID_ARGUMENT",
            413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}
    return JSONResponse({"error": {"code": code.get(status, "UNKNOWN"), "reason": reason,
                                   "message": message}}, status_code=status)


class _Refused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def _rpc_error(exc: grpc.aio.AioRpcError) -> _Refused:
    status = _HTTP_OF_GRPC.get(exc.code(), 502)
    return _Refused(_error(status, exc.code().name, exc.details() or "ingest service error"))


def _stow_facility(principal: Any, requested: str) -> str:
    """The caller's facility: a radiologist's own; an admin names one with ?facility=."""
    role = getattr(principal, "role", "")
    facilities = tuple(getattr(principal, "facilities", ()) or ())
    if role == "auditor":
        raise _Refused(_error(403, "READ_ONLY_ROLE", "auditors cannot store instances"))
    if requested:
        if facilities and requested not in facilities:
            raise _Refused(_error(403, "FACILITY_FORBIDDEN",
                                  f"this account may not store into facility {requested!r}"))
        return requested
    if len(facilities) == 1:
        return str(facilities[0])
    raise _Refused(_error(400, "FACILITY_REQUIRED",
                          "name the facility to store into with ?facility=NAME"))


def _base_url(request: Request) -> str:
    url = str(request.url).split("?", 1)[0]
    return url[:url.rfind("/studies")] if "/studies" in url else url.rsplit("/", 1)[0]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(_error(413, "REQUEST_TOO_LARGE", f"the request exceeds {limit} bytes"))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(_error(413, "REQUEST_TOO_LARGE", f"the request exceeds {limit} bytes"))
        chunks.append(chunk)
    return b"".join(chunks)


def _batches(parts: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    batches: list[list[tuple[int, bytes]]] = [[]]
    size = 0
    for item in parts:
        if batches[-1] and size + len(item[1]) > _BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += len(item[1])
    return batches


def dicomweb_router(auth_dependency: Callable[..., Any], ingest_stub: Any,
                    query_client: Any = None, *, max_request_mb: float = 512,
                    timeout_s: float = 600.0) -> APIRouter:
    """STOW-RS and QIDO-RS routes relative to the mount point (e.g. /dicomweb).

    `auth_dependency` resolves the caller (the gateway's Principal: `role`, `facilities`; the
    ingest service scopes to the token forwarded with each call); `ingest_stub` is an
    IngestServiceStub or a zero-argument callable returning one (lazy channel); `query_client`
    answers Search* (default: the same stub).
    """
    router = APIRouter(tags=["dicomweb"])
    limit = int(max_request_mb * 1024 * 1024)

    def stub() -> Any:
        return ingest_stub() if callable(ingest_stub) else ingest_stub

    def searcher() -> Any:
        client = query_client if query_client is not None else ingest_stub
        return client() if callable(client) else client

    async def store(request: Request, principal: Any, study: str = "") -> Response:
        try:
            if study and uid_problem(study):
                raise _Refused(_error(400, "INVALID_UID", f"study UID {uid_problem(study)}"))
            facility = _stow_facility(principal, request.query_params.get("facility", ""))
            try:
                parts = stow.split_request(request.headers.get("content-type", ""),
                                           await _read_body(request, limit))
            except stow.StowError as exc:
                reason = "UNSUPPORTED_MEDIA_TYPE" if exc.status == 415 else "MALFORMED_MULTIPART"
                raise _Refused(_error(exc.status, reason, exc.message)) from exc
            results = await _store(stub(), facility, parts, study, timeout_s)
        except _Refused as refused:
            return refused.response
        body = stow.response(results, _base_url(request), study)
        return Response(json.dumps(body), status_code=stow.http_status(results),
                        media_type=DICOM_JSON)

    stored = dicom_json(
        "Store Instances Response Module: every instance stored", DicomDataset,
        {202: {"model": DicomDataset, "description": "Some instances were not stored"},
         409: {"model": DicomDataset, "description": "No instance was stored"}})
    stored["openapi_extra"] = {"requestBody": {"required": True, "content": {
        "multipart/related": {"schema": {"type": "string", "format": "binary"}}}}}

    @router.post("/studies", **stored)
    async def stow_studies(request: Request,
                           principal: Any = Depends(auth_dependency)) -> Response:
        return await store(request, principal)

    @router.post("/studies/{study}", **stored)
    async def stow_study(study: str, request: Request,
                         principal: Any = Depends(auth_dependency)) -> Response:
        return await store(request, principal, study)

    async def search(request: Request, principal: Any, method: str, **uids: str) -> Response:
        accept = request.headers.get("accept", "")
        if accept and not any(a in accept for a in _ACCEPTABLE):
            return _error(406, "NOT_ACCEPTABLE", f"results are {DICOM_JSON}")
        try:
            rq = _search_request(method, request, principal, uids)
            reply = await getattr(searcher(), method)(rq, timeout=timeout_s)
        except _Refused as refused:
            return refused.response
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc).response
        headers = {}
        if reply.next_page_token and not request.query_params.get("limit"):
            headers["Warning"] = ('299 sidecar "There are additional results that can be '
                                  'requested"')
        return Response("[" + ",".join(reply.dicom_json) + "]", media_type=DICOM_JSON,
                        headers=headers)

    def qido(path: str, method: str) -> None:
        async def endpoint(request: Request,
                           principal: Any = Depends(auth_dependency)) -> Response:
            return await search(request, principal, method, **request.path_params)
        endpoint.__name__ = "qido_" + path.strip("/").replace("/", "_").replace("{", "")\
            .replace("}", "")
        router.add_api_route(path, endpoint, methods=["GET"],
                             **dicom_json("The matches (QIDO-RS)", DicomDatasets))

    qido("/studies", "SearchStudies")
    qido("/series", "SearchSeries")
    qido("/instances", "SearchInstances")
    qido("/studies/{study}/series", "SearchSeries")
    qido("/studies/{study}/instances", "SearchInstances")
    qido("/studies/{study}/series/{series}/instances", "SearchInstances")
    return router


def _search_request(method: str, request: Request, principal: Any,
                    uids: dict[str, str]) -> Any:
    fields: dict[str, Any] = {}
    match, include = [], []
    for key, value in request.query_params.multi_items():
        lowered = key.lower()
        if lowered in ("limit", "offset"):
            if not value.isdigit():
                raise _Refused(_error(400, "INVALID_ARGUMENT", f"{key} must be a whole number"))
            if lowered == "limit":
                fields["page_size"] = min(int(value), MAX_LIMIT)
            else:
                fields["page_token"] = str(int(value)) if int(value) else ""
        elif lowered == "includefield":
            include.append(value)
        elif lowered == "fuzzymatching":
            fields["fuzzy_matching"] = value.strip().lower() == "true"
        elif lowered == "token":
            continue  # the ?token= hand-over, read by the authentication
        else:
            match.append(pb.QueryParameter(key=key, value=value))
    only = getattr(principal, "study", "")  # the OHIF viewer's token: its one study
    if only and method == "SearchStudies":
        match = [m for m in match if m.key.upper() not in ("STUDYINSTANCEUID", "0020000D")]
        match.append(pb.QueryParameter(key="StudyInstanceUID", value=only))
    elif only and "study" not in uids:
        raise _Refused(_error(403, "VIEWER_TOKEN_OTHER_STUDY",
                              "the viewer's token reads its one study only"))
    if "study" in uids:
        fields["study_instance_uid"] = uids["study"]
    if "series" in uids:
        fields["series_instance_uid"] = uids["series"]
    request_type = {"SearchStudies": pb.SearchStudiesRequest,
                    "SearchSeries": pb.SearchSeriesRequest,
                    "SearchInstances": pb.SearchInstancesRequest}[method]
    return request_type(match=match, include_fields=include, **fields)


async def _store(ingest: Any, facility: str, parts: list[bytes], study: str,
                 timeout_s: float) -> list[stow.PartResult]:
    """Sends the parts in batches; a part of another study than the target is not stored."""
    identities = await asyncio.to_thread(lambda: [stow.identify(p) for p in parts])
    results: dict[int, stow.PartResult] = {}
    todo: list[tuple[int, bytes]] = []
    for i, (part, ident) in enumerate(zip(parts, identities, strict=True)):
        if study and ident.study_instance_uid and ident.study_instance_uid != study:
            results[i] = stow.PartResult(ident, False, stow.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                         "StudyInstanceUID differs from the target study")
        else:
            todo.append((i, part))
    for batch in _batches(todo) if todo else []:
        request = pb.IngestInstancesRequest(facility=facility, items=[
            pb.IngestInstancesRequestItem(dicom=part, source_ref=f"stow part {i + 1}")
            for i, part in batch])
        try:
            reply = await ingest.IngestInstances(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            if not results and exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise _rpc_error(exc) from exc  # nothing stored yet: the whole request fails
            log.warning("STOW batch failed: %s", exc.code().name)
            for i, _ in batch:
                results[i] = stow.PartResult(identities[i], False, stow.PROCESSING_FAILURE)
            continue
        for (i, _), r in zip(batch, reply.results, strict=True):
            ok = r.outcome in _OK
            results[i] = stow.PartResult(identities[i], ok,
                                         0 if ok else stow.failure_reason(r.reason), r.message)
    return [results[i] for i in range(len(parts))]

