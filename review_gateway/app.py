"""The review gateway's FastAPI app: login, scoped study/finding/audit reads, assets, health."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from protos.sidecar.ingest.v1 import retrieve_service_pb2_grpc as retrieve_grpc
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from review_gateway.admin.analytics import analytics_router
from review_gateway.admin.routes import admin_router
from review_gateway.auth import forwarding, tokens
from review_gateway.auth.oidc import oidc_router
from review_gateway.auth.sessions import SessionAuth
from review_gateway.auth.viewer_handover import handover_router
from review_gateway.clients import viewport as viewport_client
from review_gateway.clients.review import ReviewClient
from review_gateway.clients.viewport import ViewportClient
from review_gateway.clients.workflow import ChannelFactory, WorkflowClient, WorkflowConnection
from review_gateway.dicomweb import cors
from review_gateway.dicomweb.index_cache import WadoIndex
from review_gateway.dicomweb.rendered import rendered_router
from review_gateway.dicomweb.router import StowLimits, dicomweb_router
from review_gateway.dicomweb.wado import wado_router
from review_gateway.errors import ERROR_RESPONSES, ApiError, error_body
from review_gateway.health.checks import DependencyStatus, Health, HealthCheck, health, run_checks
from review_gateway.review import models
from review_gateway.review import workflow_views as views
from review_gateway.review.chat import chat_router
from review_gateway.review.drafts import draft_router
from review_gateway.review.events import EventHub
from review_gateway.review.routes import review_router
from review_gateway.settings import GatewaySettings
from review_gateway.web import access_audit, security
from review_gateway.web.assets import PrecompressedStaticFiles
from review_gateway.web.limits import BodyLimitMiddleware
from review_gateway.web.page import webapp_router
from sidecar_core.observability import metrics
from sidecar_core.storage.objectstore import ObjectStore

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSET_CACHE = "private, max-age=31536000, immutable"
_BINARY = {"schema": {"type": "string", "format": "binary"}}
# Assets are images (PNG viewports and overlays, thumbnails) or the model input (NPY).
ASSET_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"description": "The asset's bytes, of its stored content type (ETag: its SHA-256)",
          "content": {"image/png": _BINARY, "image/jpeg": _BINARY,
                      "application/octet-stream": _BINARY}},
    304: {"description": "Not modified (If-None-Match)"},
}
# Shapes of the API that no route answers with but the front end reads (the data of an SSE).
EXTRA_SCHEMAS = (models.StudyEvent,)


def _uuid_arg(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"INVALID_{what.upper()}_ID",
                       f"{what} id must be a UUID") from None


def create_app(settings: GatewaySettings,
               workflow_channel_factory: ChannelFactory | None = None,
               health_checks: Sequence[HealthCheck] = (),
               object_store: ObjectStore | None = None) -> FastAPI:
    """The gateway app; the workflow channel is opened on first use and closed at shutdown."""
    factory = workflow_channel_factory or (
        lambda: forwarding.channel(settings.mesh_credentials("gateway"),
                                   settings.workflow_address))
    connection = WorkflowConnection(factory, settings.workflow_timeout_s)
    store = object_store or settings.object_store()

    ingest_channel: list[grpc.aio.Channel] = []

    def ingest_stub() -> ingest_grpc.IngestServiceStub:
        """Opened on first use, inside the server's event loop."""
        if not ingest_channel:
            ingest_channel.append(
                forwarding.channel(settings.mesh_credentials("gateway"),
                                   settings.ingest_address))
        return ingest_grpc.IngestServiceStub(ingest_channel[0])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await auditor.close()  # after the last request: every access record is sent
            await hub.close()
            await connection.close()
            for channel in ingest_channel:
                await channel.close()

    app = FastAPI(title="Radiology AI Sidecar review gateway", version="1",
                  lifespan=lifespan)
    app.state.workflow = connection

    async def workflow() -> DependencyStatus:
        problem = await connection.client().health_problem(settings.health_timeout_s)
        return DependencyStatus("workflow", problem is None, problem or "")

    checks: list[HealthCheck] = [workflow, *health_checks]

    def client() -> WorkflowClient:
        return connection.client()

    def review() -> ReviewClient:
        return ReviewClient(connection.client().channel, settings.workflow_timeout_s)

    sessions = SessionAuth(settings, review)
    principal = sessions.principal
    dicomweb_principal = sessions.dicomweb_principal
    hub = EventHub(settings.nats_url, settings.topology(), review, sessions.check_revoked,
                   auth=settings.nats_auth("gateway"), recheck_s=settings.revocation_cache_s)
    app.state.events = hub
    # A body is bounded before authentication or any route reads it (inside the middlewares
    # that add the security headers, CORS and the request metrics, so a 413 has them too).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_json_bytes, exempt=_is_stow)

    async def store_accesses(request: rpb.RecordPhiAccessRequest) -> None:
        client = review()
        await client.call(client.stub.RecordPhiAccess, request)

    # One access record per patient-data request, stored by the workflow service (batched).
    auditor = access_audit.AccessAuditor(store_accesses)
    app.state.access_audit = auditor
    app.add_middleware(access_audit.AccessAuditMiddleware, auditor=auditor)
    security.install(app)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.scope[access_audit.REASON_KEY] = exc.reason  # for the access audit
        headers = dict(exc.headers)
        if exc.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        in_body = any(e.get("loc", ("",))[0] == "body" for e in errors)
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors) or "invalid request"
        return JSONResponse(error_body("INVALID_ARGUMENT", "INVALID_REQUEST", message),
                            status_code=422 if in_body else 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status_code, "UNKNOWN")
        reason = {404: "NO_SUCH_ROUTE", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP")
        return JSONResponse(error_body(code, reason, str(exc.detail)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:16]
        log.error("unhandled error (request %s)", request_id, exc_info=exc)
        return JSONResponse(error_body("INTERNAL", "INTERNAL",
                                       f"internal error (request id {request_id})"),
                            status_code=500)

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        metrics.HTTP_REQUESTS.labels(getattr(route, "path", "unmatched"), request.method,
                                     str(response.status_code)).inc()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.url.path.startswith(views.API) or request.url.path == "/healthz":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """This process's Prometheus metrics (text exposition format)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["health"], response_model=Health,
             responses={503: {"model": Health, "description": "A dependency is not ready"}})
    async def healthz() -> JSONResponse:
        report = health(await run_checks(checks, settings.health_timeout_s + 1.0))
        return JSONResponse(report.model_dump(mode="json", exclude_none=True),
                            status_code=200 if report.status == "ok" else 503)

    @app.get("/api/v1/studies/{study_id}/audit", tags=["studies"], responses=ERROR_RESPONSES)
    async def list_audit(
        study_id: str, me: tokens.Principal = Depends(principal),
        page_size: int = Query(default=0, ge=0, le=500),
        page_token: str = Query(default="", max_length=2048),
    ) -> models.AuditList:
        reply = await client().list_audit_events(pb.ListAuditEventsRequest(
            study_id=_uuid_arg(study_id, "study"), page_size=page_size, page_token=page_token))
        return models.AuditList(events=[views.audit_json(e) for e in reply.events],
                                next_page_token=reply.next_page_token)

    def ingest() -> grpc.aio.Channel:
        ingest_stub()  # opens the shared ingest channel
        return ingest_channel[0]

    viewports = ViewportClient(ingest)

    async def serve_asset(request: pb.GetAssetRequest, if_none_match: str | None) -> Response:
        try:
            reply = await client().get_asset(request)
        except ApiError as exc:  # viewports are rendered on their first request
            if request.kind != "viewport" or exc.reason != viewport_client.MISSING:
                raise
            reply = await viewports.render(request)
        etag = f'"{reply.asset.sha256}"'
        headers = {"ETag": etag, "Cache-Control": ASSET_CACHE}
        if if_none_match and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        try:
            data = await asyncio.to_thread(store.get, reply.object_key)
        except (FileNotFoundError, ValueError):
            log.error("asset %s: object %s is missing", reply.asset.asset_id, reply.object_key)
            raise ApiError(500, "INTERNAL", "ASSET_CONTENT_MISSING",
                           "the asset's content is missing from the object store") from None
        return Response(data, media_type=reply.asset.content_type or "application/octet-stream",
                        headers=headers)

    @app.get("/api/v1/studies/{study_id}/assets/{asset_id}", tags=["assets"],
             response_class=Response, responses=ASSET_RESPONSES)
    async def get_asset(study_id: str, asset_id: str, me: tokens.Principal = Depends(principal),
                        if_none_match: str | None = Header(default=None)) -> Response:
        return await serve_asset(pb.GetAssetRequest(
            study_id=_uuid_arg(study_id, "study"), asset_id=_uuid_arg(asset_id, "asset")),
            if_none_match)

    async def slice_image(study_id: str, series_id: str, kind: str, preset: str,
                          slice_index: int, me: tokens.Principal,
                          if_none_match: str | None) -> Response:
        return await serve_asset(pb.GetAssetRequest(
            study_id=_uuid_arg(study_id, "study"), series_id=_uuid_arg(series_id, "series"),
            kind=kind, preset=preset, slice_index=slice_index), if_none_match)

    slices = "/api/v1/studies/{study_id}/series/{series_id}/slices/{slice_index}"

    @app.get(slices + "/viewport/{preset}", tags=["assets"], response_class=Response,
             responses=ASSET_RESPONSES)
    async def get_viewport(study_id: str, series_id: str, preset: str,
                           slice_index: int = PathParam(ge=0),
                           me: tokens.Principal = Depends(principal),
                           if_none_match: str | None = Header(default=None)) -> Response:
        """The viewport image of one slice (0-based, anatomical order) in one window preset."""
        return await slice_image(study_id, series_id, "viewport", preset, slice_index, me,
                                 if_none_match)

    @app.get(slices + "/overlay/{preset}", tags=["assets"], response_class=Response,
             responses=ASSET_RESPONSES)
    async def get_overlay(study_id: str, series_id: str, preset: str,
                          slice_index: int = PathParam(ge=0),
                          me: tokens.Principal = Depends(principal),
                          if_none_match: str | None = Header(default=None)) -> Response:
        """The overlay (mask, heatmap) of one slice in one preset."""
        return await slice_image(study_id, series_id, "overlay", preset, slice_index, me,
                                 if_none_match)

    app.include_router(sessions.router())
    app.include_router(oidc_router(settings, sessions, review))
    app.include_router(handover_router(settings, sessions.keys, principal, review,
                                       sessions.check_revoked))
    app.include_router(review_router(principal, review))
    app.include_router(draft_router(principal, lambda: connection.client().channel,
                                    settings.workflow_timeout_s))
    app.include_router(chat_router(principal, lambda: connection.client().channel,
                                   settings.workflow_timeout_s))
    app.include_router(hub.router(principal))
    app.include_router(dicomweb_router(dicomweb_principal, ingest_stub, limits=StowLimits(
        max_request_bytes=settings.max_stow_bytes,
        max_part_bytes=int(settings.max_object_mb * 1024 * 1024),
        spool_dir=settings.data_dir / "tmp" / "stow")), prefix="/dicomweb")

    app.include_router(admin_router(principal, lambda: connection.client().channel,
                                    metrics_targets=settings.metrics_targets))
    app.include_router(analytics_router(principal, lambda: connection.client().channel))
    def retrieve_stub() -> retrieve_grpc.RetrieveServiceStub:
        ingest_stub()  # opens the shared ingest channel
        return retrieve_grpc.RetrieveServiceStub(ingest_channel[0])

    wado_index = WadoIndex(retrieve_stub, store, timeout_s=60.0)
    app.include_router(wado_router(dicomweb_principal, retrieve_stub, store, wado_index),
                       prefix="/dicomweb")
    app.include_router(rendered_router(dicomweb_principal, retrieve_stub, wado_index),
                       prefix="/dicomweb")
    cors.install(app, settings.cors_origins)

    @app.api_route("/api/v1/{path:path}", include_in_schema=False,
                   methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown_api(path: str, _: tokens.Principal = Depends(principal)) -> None:
        raise ApiError(404, "NOT_FOUND", "NO_SUCH_ROUTE", f"no API route /api/v1/{path}")

    @app.get("/admin/analytics", include_in_schema=False)
    async def analytics_page() -> FileResponse:
        """Review analytics for auditors: charts and CSV export."""
        return FileResponse(STATIC_DIR / "admin" / "analytics.html",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/admin/", include_in_schema=False)
    async def admin_page() -> FileResponse:
        """The operator dashboard (charts of the metrics, failed jobs)."""
        return FileResponse(STATIC_DIR / "admin" / "index.html",
                            headers={"Cache-Control": "no-cache"})

    app.include_router(webapp_router(STATIC_DIR, settings.viewer_port,
                                     settings.viewer_public_url))

    app.mount("/static", PrecompressedStaticFiles(directory=STATIC_DIR), name="static")
    _add_schemas(app, EXTRA_SCHEMAS)
    return app


def _is_stow(scope: dict[str, Any]) -> bool:
    """STOW-RS requests stream their bodies to disk under their own limit."""
    path: str = scope.get("path", "")
    return scope.get("method") == "POST" and (path == "/dicomweb/studies"
                                              or path.startswith("/dicomweb/studies/"))


def _add_schemas(app: FastAPI, extra: Sequence[type[BaseModel]]) -> None:
    """Puts `extra` into the OpenAPI document's components (for the generated front-end types)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in extra:
                schemas.setdefault(model.__name__, model.model_json_schema(
                    ref_template="#/components/schemas/{model}"))
        return build()

    app.openapi = openapi  # type: ignore[method-assign]


def _etag_matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return etag in tags
