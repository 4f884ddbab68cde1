"""WADO-RS rendered and thumbnail resources (JPEG or PNG) of studies, series, instances, frames.

A study's or series' rendered image is its representative one (the first series' middle
instance), like its thumbnail; an instance's is its first frame.
Query: `window=center,width[,linear|linear-exact|sigmoid]`, `viewport=width,height`,
`quality=1..100`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from protos.sidecar.ingest.v1 import retrieve_service_pb2 as pb
from review_gateway.dicomweb import multipart
from review_gateway.dicomweb.index_cache import WadoIndex, rpc_error
from review_gateway.dicomweb.schemas import binary
from review_gateway.dicomweb.wado import CACHE, check_uids, facilities_of, frame_numbers
from review_gateway.errors import ApiError

THUMBNAIL_VIEWPORT = (128, 128)
_IMAGE_TYPES = ("image/jpeg", "image/png")
IMAGE = binary("The rendered image (Accept: image/jpeg, the default, or image/png)",
               *_IMAGE_TYPES)


def _bad(reason: str, message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", reason, message)


def media_type(accept: str | None) -> str:
    for r in multipart.parse_accept(accept):
        if r.media_type in _IMAGE_TYPES:
            return r.media_type
        if r.media_type in ("*/*", "image/*"):
            return "image/jpeg"
    raise ApiError(406, "INVALID_ARGUMENT", "NOT_ACCEPTABLE",
                   f"rendered images are {' or '.join(_IMAGE_TYPES)}")


def _numbers(text: str, count: int, what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts[:count]]
    except ValueError:
        raise _bad(f"INVALID_{what.upper()}", f"{what} values must be numbers") from None
    if len(values) != count:
        raise _bad(f"INVALID_{what.upper()}", f"{what} needs {count} numbers")
    return values


def render_request(request: Request, thumbnail: bool) -> dict[str, Any]:
    query = request.query_params
    fields: dict[str, Any] = {"media_type": media_type(request.headers.get("accept"))}
    window = query.get("window")
    if window:
        center, width = _numbers(window, 2, "window")
        parts = window.split(",")
        function = parts[2].strip().upper().replace("-", "_") if len(parts) > 2 else "LINEAR"
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise _bad("INVALID_WINDOW", "window function is linear, linear-exact or sigmoid")
        fields.update(has_window=True, window_center=center, window_width=width,
                      window_function=function)
    viewport = query.get("viewport")
    if viewport:
        w, h = _numbers(viewport, 2, "viewport")
        if not (w == int(w) and h == int(h) and 1 <= w <= 4096 and 1 <= h <= 4096):
            raise _bad("INVALID_VIEWPORT", "viewport is width,height in pixels (1..4096)")
        fields.update(viewport_width=int(w), viewport_height=int(h))
    elif thumbnail:
        fields.update(viewport_width=THUMBNAIL_VIEWPORT[0],
                      viewport_height=THUMBNAIL_VIEWPORT[1])
    quality = query.get("quality")
    if quality:
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise _bad("INVALID_QUALITY", "quality is 1..100")
        fields["quality"] = int(quality)
    return fields


def rendered_router(auth_dependency: Callable[..., Any], retrieve_stub: Callable[[], Any],
                    index: WadoIndex, *, timeout_s: float = 60.0) -> APIRouter:
    router = APIRouter(tags=["dicomweb"])

    async def render(request: Request, principal: Any, thumbnail: bool, study: str,
                     series: str = "", sop: str = "", frame: str = "") -> Response:
        check_uids(study=study, **({"series": series} if series else {}),
                   **({"instance": sop} if sop else {}))
        number = 0
        if frame:
            numbers = frame_numbers(frame)
            if len(numbers) != 1:
                raise _bad("INVALID_FRAME_LIST", "a rendered frame is one frame number")
            number = numbers[0]
        fields = render_request(request, thumbnail)
        if sop:  # the series index (facility-scoped, cached) knows where the object is
            _, info = await index.instance(facilities_of(principal), study, series, sop)
            fields["object_key"] = str(info["key"])
        try:
            reply = await retrieve_stub().RenderFrame(pb.RenderFrameRequest(
                study_instance_uid=study,
                series_instance_uid=series, sop_instance_uid=sop, frame_number=number,
                **fields), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc
        return Response(reply.image, media_type=reply.media_type,
                        headers={"Cache-Control": CACHE, "Vary": "Accept"})

    for kind in ("rendered", "thumbnail"):
        thumb = kind == "thumbnail"

        def add(path: str, thumb: bool = thumb) -> None:
            async def endpoint(request: Request,
                               principal: Any = Depends(auth_dependency)) -> Response:
                p = request.path_params
                return await render(request, principal, thumb, p["study"], p.get("series", ""),
                                    p.get("sop", ""), p.get("frame", ""))
            endpoint.__name__ = path.strip("/").replace("/", "_").replace("{", "")\
                .replace("}", "")
            router.add_api_route(path, endpoint, methods=["GET"], response_class=Response,
                                 responses=IMAGE)

        add(f"/studies/{{study}}/{kind}")
        add(f"/studies/{{study}}/series/{{series}}/{kind}")
        add(f"/studies/{{study}}/series/{{series}}/instances/{{sop}}/{kind}")
        add(f"/studies/{{study}}/series/{{series}}/instances/{{sop}}/frames/{{frame}}/{kind}")
    return router
