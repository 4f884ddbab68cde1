"""WADO-RS: instances, metadata, frames and bulk data, facility-scoped like the JSON API.

Mount: app.include_router(wado_router(principal, retrieve_stub, store, WadoIndex(...)),
                          prefix="/dicomweb")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import UID

from protos.sidecar.ingest.v1 import retrieve_service_pb2 as pb
from review_gateway.dicomweb import multipart, transcode
from review_gateway.dicomweb.index_cache import SeriesEntry, WadoIndex, rpc_error
from review_gateway.dicomweb.schemas import (
    DICOM_JSON,
    NOT_MODIFIED,
    DicomDatasets,
    binary,
    dicom_json,
)
from review_gateway.errors import ApiError
from sidecar_core.dicom.uids import uid_problem
from sidecar_core.storage.objectstore import ObjectStore

log = logging.getLogger(__name__)
_JSON_TYPES = ("application/dicom+json", "application/json", "application/*", "*/*")
CACHE = "private, max-age=3600"
_MAX_FRAMES = 1000
INSTANCES = binary("The instances as multipart/related; type=application/dicom",
                   "multipart/related")
FRAMES = binary("The frames as multipart/related (uncompressed: application/octet-stream, "
                "else as stored)", "multipart/related")
BULK_DATA = binary("The element's value as multipart/related; type=application/octet-stream",
                   "multipart/related")
METADATA = dicom_json("The instances' metadata (bulk data as BulkDataURI)", DicomDatasets,
                      NOT_MODIFIED)


def _not_acceptable(what: str) -> ApiError:
    return ApiError(406, "INVALID_ARGUMENT", "NOT_ACCEPTABLE", what)


def _over_budget(what: str) -> ApiError:
    """406: the decoded form asked for is over the pixel budget (the stored one can be sent)."""
    return ApiError(406, "FAILED_PRECONDITION", "PIXEL_BUDGET_EXCEEDED",
                    f"{what}; ask for the stored transfer syntax instead")


def check_uids(**uids: str) -> None:
    for name, uid in uids.items():
        problem = uid_problem(uid)
        if problem:
            raise ApiError(400, "INVALID_ARGUMENT", "INVALID_UID", f"{name} {problem}")


def facilities_of(principal: Any) -> list[str]:
    """The caller's scope as a cache key ("*": every facility); the ingest service applies
    the scope itself, from the token forwarded with each call."""
    return ["*"] if principal.all_facilities else sorted(principal.facilities)


def wado_root(request: Request) -> str:
    """The DICOMweb root URL as the client addressed it. A Host header naming this server's
    own address without a port (dicomweb-client sends one) gets the port it connected to."""
    url = str(request.url).split("?", 1)[0]
    root = url[:url.index("/studies/")] if "/studies/" in url else url.rstrip("/")
    server = request.scope.get("server")
    host = request.headers.get("host", "")
    if server and host == server[0] and server[1] not in (80, 443):
        scheme, _, rest = root.partition("://")
        root = f"{scheme}://{host}:{server[1]}{rest[len(host):]}"
    return root


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in (t.strip().removeprefix("W/")
                                             for t in header.split(","))


def frame_numbers(text: str) -> list[int]:
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ApiError(400, "INVALID_ARGUMENT", "INVALID_FRAME_LIST",
                           "frames are 1-based numbers separated by commas, e.g. 1,2,3")
        numbers.append(int(part))
    if len(numbers) > _MAX_FRAMES:
        raise ApiError(400, "INVALID_ARGUMENT", "INVALID_FRAME_LIST",
                       f"at most {_MAX_FRAMES} frames per request")
    return numbers


def wado_router(auth_dependency: Callable[..., Any], retrieve_stub: Callable[[], Any],
                store: ObjectStore, index: WadoIndex, *, timeout_s: float = 60.0) -> APIRouter:
    """WADO-RS routes relative to the DICOMweb root (e.g. /dicomweb)."""
    router = APIRouter(tags=["dicomweb"])
    decoder = transcode.FrameDecoder()

    async def listing(principal: Any, study: str, series: str = "",
                      sop: str = "") -> list[Any]:
        try:
            reply = await retrieve_stub().ListStoredInstances(pb.ListStoredInstancesRequest(
                study_instance_uid=study,
                series_instance_uid=series, sop_instance_uid=sop), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc
        return list(reply.instances)

    # --- instances -------------------------------------------------------------------------

    async def retrieve(request: Request, principal: Any, study: str, series: str = "",
                       sop: str = "") -> Response:
        check_uids(study=study, **({"series": series} if series else {}),
                   **({"instance": sop} if sop else {}))
        ranges = multipart.parse_accept(request.headers.get("accept"))
        found = await listing(principal, study, series, sop)
        syntaxes = [multipart.instance_syntax(ranges, i.transfer_syntax_uid) for i in found]
        if any(s is None for s in syntaxes):
            stored = sorted({i.transfer_syntax_uid for i, s in zip(found, syntaxes, strict=True)
                             if s is None})
            raise _not_acceptable("cannot produce the accepted media type / transfer syntax; "
                                  f"stored as {', '.join(stored)}; uncompressed "
                                  f"({multipart.EXPLICIT_VR_LE}) or transfer-syntax=* can be sent")
        boundary = multipart.new_boundary()
        media_type = multipart.content_type("application/dicom", boundary)
        if sop:  # one instance: converted before answering, so a failure gets a status
            data = await _instance_bytes(store, found[0], str(syntaxes[0]))
            body = multipart.body(boundary, [(_dicom_part(str(syntaxes[0])), data)])
            return Response(body, media_type=media_type, headers={"Cache-Control": CACHE})

        async def stream() -> AsyncIterator[bytes]:
            for item, syntax in zip(found, syntaxes, strict=True):
                try:
                    data = await _instance_bytes(store, item, str(syntax))
                except ApiError as exc:
                    log.warning("retrieve: instance %s left out: %s", item.sop_instance_uid,
                                exc.message)
                    continue
                yield multipart.part_header(boundary, _dicom_part(str(syntax)))
                yield data
                yield b"\r\n"
            yield multipart.closing(boundary)

        return StreamingResponse(stream(), media_type=media_type,
                                 headers={"Cache-Control": CACHE})

    @router.get("/studies/{study}", response_class=Response, responses=INSTANCES)
    async def retrieve_study(study: str, request: Request,
                             principal: Any = Depends(auth_dependency)) -> Response:
        return await retrieve(request, principal, study)

    @router.get("/studies/{study}/series/{series}", response_class=Response,
                responses=INSTANCES)
    async def retrieve_series(study: str, series: str, request: Request,
                              principal: Any = Depends(auth_dependency)) -> Response:
        return await retrieve(request, principal, study, series)

    @router.get("/studies/{study}/series/{series}/instances/{sop}", response_class=Response,
                responses=INSTANCES)
    async def retrieve_instance(study: str, series: str, sop: str, request: Request,
                                principal: Any = Depends(auth_dependency)) -> Response:
        return await retrieve(request, principal, study, series, sop)

    # --- metadata --------------------------------------------------------------------------

    def json_response(request: Request, body: bytes, etag: str) -> Response:
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=DICOM_JSON, headers=headers)

    def check_json_accept(request: Request) -> None:
        accept = request.headers.get("accept", "")
        if accept and not any(t in accept for t in _JSON_TYPES):
            raise _not_acceptable(f"metadata is {DICOM_JSON}")

    def tag_of(entries: list[SeriesEntry], root: str) -> str:
        digest = hashlib.sha256("|".join([root, *(e.metadata_key for e in entries)]).encode())
        return f'"{digest.hexdigest()[:40]}"'

    @router.get("/studies/{study}/metadata", **METADATA)
    async def study_metadata(study: str, request: Request,
                             principal: Any = Depends(auth_dependency)) -> Response:
        check_uids(study=study)
        check_json_accept(request)
        facilities = facilities_of(principal)
        found = await listing(principal, study)
        series_uids = list(dict.fromkeys(i.series_instance_uid for i in found))
        entries = await asyncio.gather(*(index.series(facilities, study, s)
                                         for s in series_uids))
        root = wado_root(request)
        etag = tag_of(list(entries), root)
        if etag_matches(request.headers.get("if-none-match"), etag):
            return json_response(request, b"", etag)
        arrays = [(await index.metadata(e)).strip()[1:-1] for e in entries]
        body = b"[" + b",".join(a for a in arrays if a) + b"]"
        return json_response(request, body.replace(b"{WADO_ROOT}", root.encode()), etag)

    @router.get("/studies/{study}/series/{series}/metadata", **METADATA)
    async def series_metadata(study: str, series: str, request: Request,
                              principal: Any = Depends(auth_dependency)) -> Response:
        check_uids(study=study, series=series)
        check_json_accept(request)
        entry = await index.series(facilities_of(principal), study, series)
        root = wado_root(request)
        etag = tag_of([entry], root)
        if etag_matches(request.headers.get("if-none-match"), etag):
            return json_response(request, b"", etag)
        body = (await index.metadata(entry)).replace(b"{WADO_ROOT}", root.encode())
        return json_response(request, body, etag)

    @router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", **METADATA)
    async def instance_metadata(study: str, series: str, sop: str, request: Request,
                                principal: Any = Depends(auth_dependency)) -> Response:
        check_uids(study=study, series=series, instance=sop)
        check_json_accept(request)
        entry, _ = await index.instance(facilities_of(principal), study, series, sop)
        item = await index.instance_metadata(entry, sop)
        if item is None:
            raise ApiError(404, "NOT_FOUND", "NOT_FOUND", f"no metadata for instance {sop}")
        root = wado_root(request)
        body = json.dumps([item], separators=(",", ":"), ensure_ascii=False).encode()
        return json_response(request, body.replace(b"{WADO_ROOT}", root.encode()),
                             tag_of([entry], root + sop))

    # --- frames and bulk data ----------------------------------------------------------------

    @router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
                response_class=Response, responses=FRAMES)
    async def retrieve_frames(study: str, series: str, sop: str, frames: str, request: Request,
                              principal: Any = Depends(auth_dependency)) -> Response:
        check_uids(study=study, series=series, instance=sop)
        numbers = frame_numbers(frames)
        _, info = await index.instance(facilities_of(principal), study, series, sop)
        count = int(info["n"])
        if count == 0:
            raise ApiError(400, "FAILED_PRECONDITION", "NO_PIXEL_DATA",
                           f"instance {sop} has no pixel data, so it has no frames")
        missing = [n for n in numbers if n > count]
        if missing:
            raise ApiError(404, "NOT_FOUND", "FRAME_NOT_FOUND",
                           f"frame {missing[0]} is out of range: the instance has {count}")
        stored = str(info["ts"])
        compressed = UID(stored).is_encapsulated
        choice = multipart.frame_choice(multipart.parse_accept(request.headers.get("accept")),
                                        stored, compressed)
        if choice is None:
            raise _not_acceptable(
                f"frames are stored as {stored}; they can be sent as stored (transfer-syntax=*"
                f" or {stored}) or uncompressed (application/octet-stream, "
                f"{multipart.EXPLICIT_VR_LE})" if compressed else
                f"frames are uncompressed; accept application/octet-stream "
                f"({multipart.EXPLICIT_VR_LE})")
        data = await asyncio.to_thread(store.get, str(info["key"]))
        if choice.as_stored and info["direct"]:
            parts = [b"".join(data[o:o + size] for o, size in info["frames"][n - 1])
                     for n in numbers]
        else:
            try:
                if choice.as_stored and compressed:
                    every = await asyncio.to_thread(transcode.encapsulated, data, count)
                else:
                    every = await asyncio.to_thread(decoder.uncompressed, str(info["key"]), data)
            except transcode.OverPixelBudget as exc:
                raise _over_budget(str(exc)) from exc
            except transcode.TranscodeError as exc:
                raise _not_acceptable(f"cannot produce these frames: {exc}") from exc
            if len(every) < max(numbers):
                raise ApiError(404, "NOT_FOUND", "FRAME_NOT_FOUND",
                               f"the pixel data holds {len(every)} frames")
            parts = [every[n - 1] for n in numbers]
        boundary = multipart.new_boundary()
        part_type = f"{choice.part_type}; transfer-syntax={choice.transfer_syntax}"
        body = multipart.body(boundary, [(part_type, p) for p in parts])
        return Response(body, headers={"Cache-Control": CACHE}, media_type=multipart.content_type(
            choice.part_type, boundary, choice.transfer_syntax))

    @router.get("/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}",
                response_class=Response, responses=BULK_DATA)
    async def bulk_data(study: str, series: str, sop: str, tag: str, request: Request,
                        principal: Any = Depends(auth_dependency)) -> Response:
        check_uids(study=study, series=series, instance=sop)
        if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
            raise ApiError(400, "INVALID_ARGUMENT", "INVALID_TAG", "bulk data tag is 8 hex digits")
        ranges = multipart.parse_accept(request.headers.get("accept"))
        if not any(multipart.is_multipart_of(r, ("application/octet-stream",)) for r in ranges):
            raise _not_acceptable("bulk data is multipart/related; type=application/octet-stream")
        _, info = await index.instance(facilities_of(principal), study, series, sop)
        data = await asyncio.to_thread(store.get, str(info["key"]))
        value = await asyncio.to_thread(_element_bytes, data, int(tag, 16))
        if value is None:
            raise ApiError(404, "NOT_FOUND", "NO_SUCH_BULK_DATA",
                           f"instance {sop} has no bulk data element {tag.upper()}")
        boundary = multipart.new_boundary()
        body = multipart.body(boundary, [("application/octet-stream", value)])
        return Response(body, headers={"Cache-Control": CACHE},
                        media_type=multipart.content_type("application/octet-stream", boundary))

    return router


def _dicom_part(syntax: str) -> str:
    return f"application/dicom; transfer-syntax={syntax}"


async def _instance_bytes(store: ObjectStore, item: Any, syntax: str) -> bytes:
    data = await asyncio.to_thread(store.get, item.object_key)
    if syntax == item.transfer_syntax_uid:
        return data
    try:
        return await asyncio.to_thread(transcode.instance, data, syntax)
    except transcode.OverPixelBudget as exc:
        raise _over_budget(f"instance {item.sop_instance_uid}: {exc}") from exc
    except transcode.TranscodeError as exc:
        raise _not_acceptable(f"instance {item.sop_instance_uid} cannot be sent in {syntax}: "
                              f"{exc}") from exc


def _element_bytes(data: bytes, tag: int) -> bytes | None:
    ds = transcode.read(data)
    if tag not in ds:
        return None
    value = ds[tag].value
    return bytes(value) if isinstance(value, bytes | bytearray) else None
