"""DICOMweb edge: STOW-RS into the Ingest RPC and QIDO-RS searches, behind the gateway's auth.

Mount: app.include_router(dicomweb_router(principal, ingest_stub), prefix="/dicomweb")
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from review_gateway.dicomweb import stow
from review_gateway.dicomweb.schemas import DICOM_JSON, DicomDataset, DicomDatasets, dicom_json
from review_gateway.web import access_audit
from review_gateway.web import limits as body_limits
from sidecar_core.dicom.uids import uid_problem

log = logging.getLogger(__name__)
_BATCH_BYTES = 64 * 1024 * 1024
_BATCH_PARTS = 1000  # parts held before they are sent, however small
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


@dataclass(frozen=True)
class StowLimits:
    """The bounds of a STOW-RS request: its size (SIDECAR_MAX_STOW_BYTES), each part's
    (SIDECAR_MAX_OBJECT_MB) and where parts are spooled (an unnamed file each, gone when closed
    whatever happens; the data dir's tmp/stow in the gateway)."""

    max_request_bytes: int = 2 * 1024**3
    max_part_bytes: int = 512 * 1024 * 1024
    spool_dir: Path | None = None
    in_memory_bytes: int = 256 * 1024  # a part up to this stays in memory, larger go to disk

    def new_file(self) -> BinaryIO:
        if self.spool_dir is not None:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cast(BinaryIO, tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by the caller)
            max_size=self.in_memory_bytes,
            dir=str(self.spool_dir) if self.spool_dir is not None else None))


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


async def _too_large(request: Request, limit: int, left: int | None) -> _Refused:
    """413; the rest of the body (`left` bytes when known) is read and dropped when it is
    small, else the connection is closed with it unread."""
    response = _error(413, "REQUEST_TOO_LARGE",
                      f"the STOW-RS request exceeds {limit} bytes (SIDECAR_MAX_STOW_BYTES)")
    if (left is not None and left > body_limits.DRAIN_BYTES) or not await body_limits.drain(
            request.receive):
        response.headers["Connection"] = "close"
    return _Refused(response)


def dicomweb_router(auth_dependency: Callable[..., Any], ingest_stub: Any,
                    query_client: Any = None, *, max_request_mb: float | None = None,
                    limits: StowLimits | None = None, timeout_s: float = 600.0) -> APIRouter:
    """STOW-RS and QIDO-RS routes relative to the mount point (e.g. /dicomweb).

    `auth_dependency` resolves the caller (the gateway's Principal: `role`, `facilities`; the
    ingest service scopes to the token forwarded with each call); `ingest_stub` is an
    IngestServiceStub or a zero-argument callable returning one (lazy channel); `query_client`
    answers Search* (default: the same stub). `limits` bound STOW-RS (`max_request_mb`, when
    given, sets only the request size).
    """
    router = APIRouter(tags=["dicomweb"])
    limits = limits or StowLimits()
    if max_request_mb is not None:
        limits = replace(limits, max_request_bytes=int(max_request_mb * 1024 * 1024))

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
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_request_bytes:
                raise await _too_large(request, limits.max_request_bytes,
                                       int(declared))
            try:
                boundary = stow.request_boundary(request.headers.get("content-type", ""))
            except stow.StowError as exc:
                raise _refusal(exc) from exc
            upload = _Upload(stub(), facility, study, limits, timeout_s)
            try:
                results, refusal = await upload.run(request, boundary)
            except ClientDisconnect:
                log.info("STOW-RS client went away before the end of its request")
                return Response(status_code=400)  # nobody reads it
            finally:
                upload.close()
        except _Refused as refused:
            return refused.response
        body = stow.response(results, _base_url(request), study)
        if refusal is None:
            return Response(json.dumps(body), status_code=stow.http_status(results),
                            media_type=DICOM_JSON)
        # Cut short after some instances were stored: the refusal's status, and the Store
        # Instances Response of what was received before it (PS3.18 10.5.3).
        message = json.loads(bytes(refusal.response.body))["error"]["message"]
        return Response(json.dumps(body), status_code=refusal.response.status_code,
                        media_type=DICOM_JSON, headers={
                            "Warning": f'299 sidecar "{message}"',
                            **({"Connection": "close"}
                               if refusal.response.headers.get("connection") else {})})

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
        access_audit.note(request.scope, study_uids=access_audit.qido_studies(
            list(reply.dicom_json)), count=len(reply.dicom_json))
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


def _refusal(exc: stow.StowError) -> _Refused:
    reason = "UNSUPPORTED_MEDIA_TYPE" if exc.status == 415 else "MALFORMED_MULTIPART"
    return _Refused(_error(exc.status, reason, exc.message))


class _Upload:
    """One STOW-RS request read part by part into spools and sent to the Ingest RPC in batches
    as the parts complete: memory holds at most one batch, disk at most the parts of one batch
    (or one part), whatever the request's size."""

    def __init__(self, ingest: Any, facility: str, study: str, limits: StowLimits,
                 timeout_s: float) -> None:
        self.ingest = ingest
        self.facility = facility
        self.study = study
        self.limits = limits
        self.timeout_s = timeout_s
        self.results: list[stow.PartResult] = []
        self.pending: list[stow.SpooledPart] = []
        self.pending_bytes = 0
        self.reader: stow.MultipartReader | None = None

    async def run(self, request: Request, boundary: bytes
                  ) -> tuple[list[stow.PartResult], _Refused | None]:
        """The result of every part received; a refusal (400, 413, 415) that cut the request
        short: raised when nothing was stored, else returned beside the results."""
        self.reader = reader = stow.MultipartReader(boundary, self.limits.new_file,
                                                    self.limits.max_part_bytes, dicom_only=True)
        received = 0
        refusal: _Refused | None = None
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > self.limits.max_request_bytes:
                    log.warning("STOW-RS request refused after %d bytes (limit %d)",
                                received, self.limits.max_request_bytes)
                    raise await _too_large(request, self.limits.max_request_bytes, None)
                try:
                    reader.feed(chunk)
                finally:
                    self._take(reader)
                if self.pending_bytes >= _BATCH_BYTES or len(self.pending) >= _BATCH_PARTS:
                    await self._flush()
            reader.finish()
            if not self.results and not self.pending:
                raise stow.StowError(400, "the request holds no parts")
        except stow.StowError as exc:
            refusal = _refusal(exc)
        except _Refused as refused:
            refusal = refused
        await self._flush()
        if refusal is not None and not any(r.stored for r in self.results):
            raise refusal
        return self.results, refusal

    def close(self) -> None:
        for part in self.pending:
            part.close()
        self.pending.clear()
        if self.reader is not None:
            self.reader.close()

    def _take(self, reader: stow.MultipartReader) -> None:
        for part in reader.completed:
            if part.too_large:
                ident = stow.identify(part.file)
                part.close()
                self.results.append(stow.PartResult(
                    ident, False, stow.OUT_OF_RESOURCES,
                    f"the object exceeds {self.limits.max_part_bytes} bytes"))
            else:
                self.pending.append(part)
                self.pending_bytes += part.size
        reader.completed.clear()

    async def _flush(self) -> None:
        if not self.pending:
            return
        parts, self.pending, self.pending_bytes = self.pending, [], 0
        try:
            blobs = await asyncio.to_thread(lambda: [p.read() for p in parts])
        finally:
            for part in parts:
                part.close()
        self.results.extend(await _store(self.ingest, self.facility, blobs, self.study,
                                         self.timeout_s, first=parts[0].index,
                                         nothing_before=not self.results))


async def _store(ingest: Any, facility: str, parts: list[bytes], study: str,
                 timeout_s: float, first: int = 0, nothing_before: bool = True
                 ) -> list[stow.PartResult]:
    """Sends the parts in batches; a part of another study than the target is not stored.
    `first` is the index of parts[0] in the request; when `nothing_before` was answered, a
    failure of the first batch fails the whole request."""
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
            pb.IngestInstancesRequestItem(dicom=part, source_ref=f"stow part {first + i + 1}")
            for i, part in batch])
        try:
            reply = await ingest.IngestInstances(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            if nothing_before and not results and exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
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

