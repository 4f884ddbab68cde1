"""The review gateway's JSON API against a real WorkflowService on gRPC and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ingest_svc.rpc.viewport_servicer import ViewportServicer
from protos.sidecar.ingest.v1 import viewport_service_pb2 as viewport_pb
from protos.sidecar.ingest.v1 import viewport_service_pb2_grpc as viewport_grpc
from review_gateway.app import create_app
from review_gateway.auth import tokens
from review_gateway.errors import ApiError
from review_gateway.health.checks import DependencyStatus
from review_gateway.main import run
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.display.viewports import ViewportRenderer
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.session_tokens import KeySet, load_or_create_secret
from sidecar_core.security.user_auth import user_authentication
from sidecar_core.serving.grpc_server import GrpcServer
from sidecar_core.storage.objectstore import ObjectStore
from tests import pki as test_pki
from tests.integration.test_workflow_queries import PASSWORD, Seeded, seed
from tests.servers import free_port
from workflow_svc.review import servicer as review_servicer
from workflow_svc.study import servicer

SECRET = "test-secret-" + "x" * 40
STUDY_KEYS = {"id", "study_instance_uid", "accession", "facility", "modality", "state",
              "eligibility", "received_at", "partial", "ai_status", "description", "study_date",
              "finding_count", "max_confidence", "assigned_to", "patient",
              "referring_physician", "body_part"}
SERIES_KEYS = {"id", "series_instance_uid", "modality", "description", "body_part",
               "instance_count", "slice_count", "preprocess_status", "derived", "thumbnail_url",
               "preview_url", "model_input_url", "viewport_url_template", "presets",
               "overlay_url_template"}
FINDING_KEYS = {"id", "label", "code", "confidence", "kind", "model", "ai_run_id",
                "series_instance_uid", "sop_instance_uid", "frame", "bbox_px", "center_mm",
                "points_px", "measurements", "summary", "review_status", "slice_index",
                "series_id", "origin", "below_threshold", "version", "decision", "current"}
AUDIT_KEYS = {"id", "type", "at", "actor", "job_id", "attempt", "error_class", "error_message",
              "context"}


@dataclass
class Gateway:
    http: httpx.AsyncClient
    seeded: Seeded
    server: GrpcServer
    app: FastAPI

    async def auth(self, username: str) -> dict[str, str]:
        reply = await self.http.post("/api/v1/auth/login",
                                     json={"username": username, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@pytest.fixture()
async def gateway(db: Database, tmp_path: Path) -> AsyncIterator[Gateway]:
    store = ObjectStore(tmp_path / "objects", fsync=False)
    seeded = await seed(db, store)
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"), interceptors=[
        user_authentication(db, Topology("gwtest", "GWTEST"), "workflow_svc",
                            KeySet(SECRET.encode()), 0)])
    servicer.register(server, db)
    review_servicer.register(server, db, Topology("gwtest", "GWTEST"))
    server.register(viewport_grpc.add_ViewportServiceServicer_to_server,
                    ViewportServicer(ViewportRenderer(db, store)),
                    [viewport_pb.DESCRIPTOR.services_by_name["ViewportService"].full_name])
    port = await server.start()
    test_pki.install(tmp_path)
    settings = GatewaySettings(data_dir=tmp_path, object_store_dir=tmp_path / "objects",
                               workflow_address=f"127.0.0.1:{port}", token_secret=SECRET,
                               ingest_address=f"127.0.0.1:{port}",
                               health_timeout_s=2.0)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            yield Gateway(http, seeded, server, app)
    finally:
        await server.stop(0)


def _error(reply: httpx.Response, status: int, reason: str) -> dict[str, str]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"code", "reason", "message"} and error["reason"] == reason
    return dict(error)


@pytest.mark.integration
async def test_login_ok_and_bad_credentials(gateway: Gateway) -> None:
    for username, role in [("rad-a", "radiologist"), ("admin", "admin"), ("auditor", "auditor")]:
        reply = await gateway.http.post("/api/v1/auth/login",
                                        json={"username": username, "password": PASSWORD})
        body = reply.json()
        assert reply.status_code == 200 and set(body) == {"access_token", "token_type",
                                                          "expires_in", "role", "username",
                                                          "facilities", "csrf_token"}
        assert (body["token_type"], body["role"], body["expires_in"]) == ("bearer", role, 3600)
    for creds in ({"username": "rad-a", "password": "nope"}, {"username": "x", "password": "y"}):
        err = _error(await gateway.http.post("/api/v1/auth/login", json=creds), 401,
                     "BAD_CREDENTIALS")
        assert err["code"] == "UNAUTHENTICATED"
    err = _error(await gateway.http.post("/api/v1/auth/login", json={"username": "rad-a"}),
                 422, "INVALID_REQUEST")
    assert "body.password" in err["message"] and "required" in err["message"]
    reply = await gateway.http.post("/api/v1/auth/login", content=b"{not json",
                                    headers={"Content-Type": "application/json"})
    _error(reply, 422, "INVALID_REQUEST")


@pytest.mark.integration
async def test_every_api_route_needs_a_valid_token(gateway: Gateway) -> None:
    study = f"/api/v1/studies/{gateway.seeded.study}"
    for path in ("/api/v1/studies", study, f"{study}/findings", f"{study}/audit",
                 f"{study}/assets/{gateway.seeded.assets['thumb']}", "/api/v1/nowhere"):
        reply = await gateway.http.get(path)
        _error(reply, 401, "MISSING_TOKEN")
        assert reply.headers["WWW-Authenticate"] == "Bearer"
    _error(await gateway.http.get("/api/v1/studies", headers={"Authorization": "Basic eDp5"}),
           401, "MISSING_TOKEN")
    token = (await gateway.auth("rad-b"))["Authorization"].removeprefix("Bearer ")
    header, claims, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(claims + "=="))
    forged["role"] = "admin"
    forged_b64 = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    expired = tokens.issue(SECRET.encode(), user_id="u", username="rad-a", role="radiologist",
                         facilities=["fac-a"], ttl_s=60, now=time.time() - 120)
    foreign = tokens.issue(b"another key" * 4, user_id="u", username="admin", role="admin",
                         facilities=[], ttl_s=60)
    for bad, reason in [(f"{header}.{forged_b64}.{signature}", "INVALID_TOKEN"),
                        (foreign, "INVALID_TOKEN"), ("garbage", "INVALID_TOKEN"),
                        (expired, "TOKEN_EXPIRED")]:
        reply = await gateway.http.get("/api/v1/studies",
                                       headers={"Authorization": f"Bearer {bad}"})
        _error(reply, 401, reason)
    headers = await gateway.auth("admin")
    _error(await gateway.http.get("/api/v1/nowhere", headers=headers), 404, "NO_SUCH_ROUTE")


@pytest.mark.integration
async def test_list_studies_by_accession(gateway: Gateway) -> None:
    headers = await gateway.auth("rad-a")
    reply = await gateway.http.get("/api/v1/studies", params={"accession": "ACC-1"},
                                   headers=headers)
    assert reply.status_code == 200 and reply.headers["Cache-Control"] == "no-store"
    body = reply.json()
    assert set(body) == {"studies", "next_page_token"} and body["next_page_token"] == ""
    (study,) = body["studies"]
    assert set(study) == STUDY_KEYS
    assert study["id"] == str(gateway.seeded.study)
    assert (study["facility"], study["state"], study["modality"]) == (
        "fac-a", "ready_for_review", "CT")
    assert study["eligibility"] == {"eligible": True, "reason": "chest CT is covered"}
    assert study["received_at"] == "2024-05-01T08:00:00Z"
    assert (study["partial"], study["ai_status"]) == (False, "findings")
    reply = await gateway.http.get("/api/v1/studies", params={"state": "nope"}, headers=headers)
    _error(reply, 400, "INVALID_STATE")
    reply = await gateway.http.get("/api/v1/studies", params={"page_size": "many"},
                                   headers=headers)
    assert "page_size" in _error(reply, 400, "INVALID_REQUEST")["message"]


@pytest.mark.integration
async def test_study_detail_has_history_and_series_urls(gateway: Gateway) -> None:
    headers, s = await gateway.auth("rad-a"), gateway.seeded
    reply = await gateway.http.get(f"/api/v1/studies/{s.study}", headers=headers)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == STUDY_KEYS | {"state_history", "series"}
    history = body["state_history"]
    assert [(h["from_state"], h["state"]) for h in history] == [
        (None, "received"), ("received", "processed"), ("processed", "ai_complete"),
        ("ai_complete", "ready_for_review")]
    assert history[1] == {"state": "processed", "at": "2024-05-01T08:00:10Z",
                          "from_state": "received", "actor": "workflow", "reason": "step 1"}
    (series,) = body["series"]
    assert set(series) == SERIES_KEYS
    base = f"/api/v1/studies/{s.study}"
    assert series["thumbnail_url"] == f"{base}/assets/{s.assets['thumb']}"
    assert series["preview_url"] == f"{base}/assets/{s.assets['preview']}"
    assert series["model_input_url"] == f"{base}/assets/{s.assets['model']}"
    slices = f"{base}/series/{s.series}/slices/{{slice}}"
    assert series["viewport_url_template"] == f"{slices}/viewport/{{preset}}"
    assert series["overlay_url_template"] == f"{slices}/overlay/{{preset}}"
    assert series["presets"] == ["lung", "mediastinum"]
    assert (series["slice_count"], series["body_part"]) == (2, "CHEST")
    for url, name in [(series["thumbnail_url"], "thumb"),
                      (series["viewport_url_template"].format(slice=1, preset="lung"), "vp1-lung"),
                      (series["viewport_url_template"].format(slice=0, preset="mediastinum"),
                       "vp0-med"),
                      (series["overlay_url_template"].format(slice=1, preset="lung"), "ov1-lung")]:
        got = await gateway.http.get(url, headers=headers)
        assert got.status_code == 200 and got.content == s.asset_bytes[name], url
    # a viewport without a row is rendered on demand by the ingest service; this seeded slice
    # has no stored instance, an unknown preset names the series' presets
    missing = series["viewport_url_template"].format(slice=1, preset="mediastinum")
    _error(await gateway.http.get(missing, headers=headers), 404, "SLICE_NOT_STORED")
    unknown = series["viewport_url_template"].format(slice=1, preset="nonsense")
    error = _error(await gateway.http.get(unknown, headers=headers), 404, "PRESET_NOT_FOUND")
    assert "'nonsense'" in error["message"] and "lung, mediastinum" in error["message"]
    missing = series["overlay_url_template"].format(slice=0, preset="lung")  # only on demand
    _error(await gateway.http.get(missing, headers=headers), 404, "ASSET_NOT_FOUND")
    _error(await gateway.http.get("/api/v1/studies/not-a-uuid", headers=headers), 400,
           "INVALID_STUDY_ID")
    _error(await gateway.http.get(f"/api/v1/studies/{uuid.uuid4()}", headers=headers), 404,
           "STUDY_NOT_FOUND")


@pytest.mark.integration
async def test_findings_shape_excludes_hidden(gateway: Gateway) -> None:
    s = gateway.seeded
    reply = await gateway.http.get(f"/api/v1/studies/{s.study}/findings",
                                   headers=await gateway.auth("rad-a"))
    assert reply.status_code == 200
    findings = reply.json()["findings"]
    assert [f["label"] for f in findings] == ["nodule", "summary"]
    nodule, summary = findings
    assert set(nodule) == FINDING_KEYS
    assert nodule["id"] == str(s.findings["nodule"]) and nodule["kind"] == "box"
    assert nodule["model"] == {"name": "chest-ct-nodules", "version": "1.0"}
    assert nodule["bbox_px"] == [10, 20, 30, 40] and nodule["center_mm"] == [1.5, -2.0, 30.0]
    assert nodule["measurements"] == {"diameter_mm": 6.5}
    assert (nodule["review_status"], nodule["frame"], nodule["confidence"]) == ("pending", 1, 0.9)
    # the key slice of the nodule (its SOP instance's viewport images are slice 1)
    assert (nodule["slice_index"], nodule["series_id"]) == (1, str(s.series))
    assert (summary["slice_index"], summary["series_id"]) == (-1, None)
    assert (summary["bbox_px"], summary["center_mm"], summary["kind"]) == (
        None, None, "classification")
    admin = await gateway.http.get(f"/api/v1/studies/{s.study}/findings?include_hidden=true",
                                   headers=await gateway.auth("admin"))
    assert [f["label"] for f in admin.json()["findings"]] == ["nodule", "summary", "shadow"]
    reply = await gateway.http.get(f"/api/v1/studies/{s.study}/findings?include_hidden=true",
                                   headers=await gateway.auth("rad-a"))
    _error(reply, 403, "HIDDEN_FINDINGS_FORBIDDEN")


@pytest.mark.integration
async def test_audit_events_in_time_order(gateway: Gateway) -> None:
    headers, s = await gateway.auth("auditor"), gateway.seeded
    body = (await gateway.http.get(f"/api/v1/studies/{s.study}/audit", headers=headers)).json()
    assert set(body) == {"events", "next_page_token"}
    events = body["events"]
    assert [e["type"] for e in events] == s.audit_types
    assert all(set(e) == AUDIT_KEYS for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    failed = events[1]
    assert (failed["job_id"], failed["attempt"], failed["error_class"]) == (
        "job-1", 2, "TritonUnavailable")
    assert failed["context"] == {"model": "chest-ct-nodules", "n": 1}
    assert isinstance(failed["context"]["n"], int)
    first = (await gateway.http.get(f"/api/v1/studies/{s.study}/audit?page_size=2",
                                    headers=headers)).json()
    rest = (await gateway.http.get(f"/api/v1/studies/{s.study}/audit", headers=headers,
                                   params={"page_token": first["next_page_token"]})).json()
    assert [e["id"] for e in first["events"] + rest["events"]] == [e["id"] for e in events]


@pytest.mark.integration
async def test_asset_bytes_etag_and_not_modified(gateway: Gateway) -> None:
    headers, s = await gateway.auth("rad-a"), gateway.seeded
    url = f"/api/v1/studies/{s.study}/assets/{s.assets['preview']}"
    reply = await gateway.http.get(url, headers=headers)
    assert reply.status_code == 200 and reply.content == s.asset_bytes["preview"]
    assert reply.headers["Content-Type"] == "image/gif"
    sha = ObjectStore.key_for(s.asset_bytes["preview"]).removeprefix("sha256/")
    assert reply.headers["ETag"] == f'"{sha}"'
    assert reply.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    again = await gateway.http.get(url, headers={**headers, "If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == f'"{sha}"'
    stale = await gateway.http.get(url, headers={**headers, "If-None-Match": '"0000"'})
    assert stale.status_code == 200
    _error(await gateway.http.get(f"/api/v1/studies/{s.study}/assets/{uuid.uuid4()}",
                                  headers=headers), 404, "ASSET_NOT_FOUND")
    _error(await gateway.http.get(f"/api/v1/studies/{s.study}/assets/x", headers=headers),
           400, "INVALID_ASSET_ID")


@pytest.mark.integration
async def test_radiologist_of_other_facility_sees_nothing_of_a(gateway: Gateway) -> None:
    headers, s = await gateway.auth("rad-b"), gateway.seeded
    listed = (await gateway.http.get("/api/v1/studies", headers=headers)).json()["studies"]
    assert [x["id"] for x in listed] == [str(s.study_b)]
    by_acc = await gateway.http.get("/api/v1/studies?accession=ACC-1", headers=headers)
    assert by_acc.json()["studies"] == []
    unknown = await gateway.http.get(f"/api/v1/studies/{uuid.uuid4()}", headers=headers)
    hidden = await gateway.http.get(f"/api/v1/studies/{s.study}", headers=headers)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"]["reason"] == unknown.json()["error"]["reason"]
    for path in ("findings", "audit", f"assets/{s.assets['thumb']}",
                 f"series/{s.series}/slices/0/viewport/lung"):
        reply = await gateway.http.get(f"/api/v1/studies/{s.study}/{path}", headers=headers)
        _error(reply, 404, "STUDY_NOT_FOUND")


@pytest.mark.integration
async def test_page_size_one_walks_all_studies(gateway: Gateway) -> None:
    headers, seen, token = await gateway.auth("admin"), [], ""
    for _ in range(10):
        body = (await gateway.http.get("/api/v1/studies", headers=headers,
                                       params={"page_size": 1, "page_token": token})).json()
        assert len(body["studies"]) <= 1
        seen += [x["accession"] for x in body["studies"]]
        if not (token := body["next_page_token"]):
            break
    assert seen == ["ACC-B1", "ACC-3", "ACC-2", "ACC-1"]
    reply = await gateway.http.get("/api/v1/studies?page_token=bogus", headers=headers)
    _error(reply, 400, "INVALID_PAGE_TOKEN")


@pytest.mark.integration
async def test_healthz_follows_the_workflow_service(gateway: Gateway) -> None:
    reply = await gateway.http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "dependencies": {"workflow": {"status": "ok"}}}
    await gateway.server.stop(0)
    reply = await gateway.http.get("/healthz")
    assert reply.status_code == 503
    body = reply.json()
    assert body["dependencies"]["workflow"]["status"] == "unavailable"
    assert body["error"]["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert "workflow" in body["error"]["message"]
    login = await gateway.http.post("/api/v1/auth/login",
                                    json={"username": "rad-a", "password": PASSWORD})
    _error(login, 503, "UNAVAILABLE")


@pytest.mark.integration
async def test_healthz_reports_a_plugged_in_dependency(gateway: Gateway, tmp_path: Path) -> None:
    async def nats() -> DependencyStatus:
        return DependencyStatus("nats", False, "not connected")

    test_pki.install(tmp_path)
    settings = GatewaySettings(data_dir=tmp_path, token_secret=SECRET,
                               workflow_address=f"127.0.0.1:{gateway.server.port}")
    app = create_app(settings, health_checks=[nats])
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        reply = await http.get("/healthz")
    assert reply.status_code == 503
    assert reply.json()["dependencies"] == {
        "workflow": {"status": "ok"}, "nats": {"status": "unavailable", "detail": "not connected"}}


@pytest.mark.integration
async def test_openapi_and_index(gateway: Gateway) -> None:
    spec = (await gateway.http.get("/openapi.json")).json()
    assert "/api/v1/studies/{study_id}/findings" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    index = await gateway.http.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["Content-Type"]


def test_tokens_round_trip_and_scope() -> None:
    key = b"k" * 32
    token = tokens.issue(key, user_id="u1", username="rad", role="radiologist",
                       facilities=["fac-a"], ttl_s=60, now=1000)
    me = tokens.verify(key, token, now=1059)
    assert (me.user_id, me.role, me.facilities, me.expires_at) == (
        "u1", "radiologist", ("fac-a",), 1060)
    assert me.scope() == ("fac-a",) and not me.all_facilities
    with pytest.raises(ApiError, match="expired"):
        tokens.verify(key, token, now=1060)
    admin = tokens.issue(key, user_id="u2", username="a", role="admin", facilities=[], ttl_s=60)
    assert tokens.verify(key, admin).scope() is None  # every facility: the explicit fac_all
    unbound = tokens.issue(key, user_id="u3", username="r", role="radiologist", facilities=[],
                         ttl_s=60)
    assert tokens.verify(key, unbound).scope() == ()  # never widened to "all facilities"
    with pytest.raises(ApiError) as exc:
        tokens.require_scope(tokens.verify(key, unbound))
    assert exc.value.status == 403


def test_generated_secret_is_private_and_persistent(tmp_path: Path) -> None:
    # an explicit HS256 setup's generated secret (load_key_set), kept for SIDECAR_TOKEN_SECRET
    path = tmp_path / "data" / "gateway-secret"
    key = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 32
    assert load_or_create_secret(path) == key
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_generated_signing_key_is_private_and_persistent(tmp_path: Path) -> None:
    """The default: an Ed25519 key pair in the data dir, the private half 0600."""
    settings = GatewaySettings(data_dir=tmp_path / "data", token_secret="")
    keys = settings.key_set()
    private = tmp_path / "data" / "token-signing.key"
    public = tmp_path / "data" / "token-signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and keys.algorithm == "EdDSA"
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert GatewaySettings(data_dir=tmp_path / "data").key_set().current_kid == keys.current_kid
    assert not (tmp_path / "data" / "gateway-secret").exists()
    assert not [p for p in private.parent.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.integration
async def test_run_serves_until_stopped(gateway: Gateway, tmp_path: Path) -> None:
    port = free_port()
    test_pki.install(tmp_path)
    settings = GatewaySettings(data_dir=tmp_path, token_secret=SECRET, gateway_port=port,
                               workflow_address=f"127.0.0.1:{gateway.server.port}",
                               log_level="WARNING")
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(settings, stop, started=started))
    await asyncio.wait_for(started.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/healthz")).status_code == 200
        login = await http.post("/api/v1/auth/login",
                                json={"username": "rad-a", "password": PASSWORD})
        assert login.status_code == 200
    stop.set()
    await asyncio.wait_for(task, 15)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")
