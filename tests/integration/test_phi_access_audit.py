"""The PHI access audit on a real gateway, ReviewService and PostgreSQL: one `phi.*` event per
request that returned patient data or was refused, written by the server, with who (from the
verified token), role, session id, client address, what, study and patient reference."""

from __future__ import annotations

import asyncio
import statistics
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from review_gateway.main import run
from sidecar_core.db import Database
from tests.integration.review_env import review_env
from tests.integration.test_workflow_queries import PASSWORD
from tests.servers import free_port

pytestmark = pytest.mark.integration
ROUNDS = 4


async def _phi_events(db: Database, expected: int, timeout_s: float = 10.0
                      ) -> list[dict[str, Any]]:
    """The phi.* events in commit order, once `expected` of them are stored."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with db.unit_of_work() as s:
            rows = (await s.execute(text(
                "SELECT type, actor, facility, accession, study_id, context FROM audit_events "
                "WHERE type LIKE 'phi.%' ORDER BY at, seq"))).all()
        if len(rows) >= expected or asyncio.get_running_loop().time() > deadline:
            return [{"type": r[0], "actor": r[1], "facility": r[2], "accession": r[3],
                     "study_id": r[4], **r[5]} for r in rows]
        await asyncio.sleep(0.1)


async def test_a_radiologists_reads_and_refusals_are_each_one_event(db: Database,
                                                                    tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        login = await env.login("rad-a")
        token = login["access_token"]
        env.http.cookies.clear()  # the bearer header only
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        auth = {"Authorization": f"Bearer {token}"}
        study, other = str(env.seeded.study), str(env.seeded.study_b)

        page = await env.http.get("/api/v1/studies", headers=auth, params={"page_size": 50})
        assert page.status_code == 200, page.text
        listed = [s["id"] for s in page.json()["studies"]]
        assert study in listed and other not in listed
        assert (await env.http.get(f"/api/v1/studies/{study}", headers=auth)).status_code == 200
        assert (await env.http.get(f"/api/v1/studies/{study}/findings",
                                   headers=auth)).status_code == 200
        # another facility's study: refused (404 alike), and recorded as refused
        assert (await env.http.get(f"/api/v1/studies/{other}",
                                   headers=auth)).status_code == 404
        # no token at all: refused, nobody to name
        assert (await env.http.get(f"/api/v1/studies/{study}/findings")).status_code == 401
        # not patient data: no event
        assert (await env.http.get("/api/v1/me", headers=auth)).status_code == 200
        await env.app.state.access_audit.close()

        events = await _phi_events(db, 5)
    assert [(e["type"], e["what"], e["status"]) for e in events] == [
        ("phi.accessed", "worklist", 200), ("phi.accessed", "study", 200),
        ("phi.accessed", "findings", 200), ("phi.access_refused", "study", 404),
        ("phi.access_refused", "findings", 401)], events
    worklist, detail, findings, refused, anonymous = events
    for e in (worklist, detail, findings, refused):
        assert (e["user"], e["role"], e["session_id"], e["actor"]) == (
            "rad-a", "radiologist", jti, "user:rad-a"), e
        assert e["client_address"] == "127.0.0.1", e
    assert worklist["count"] == len(listed)
    assert [s["study_id"] for s in worklist["studies"]] == listed
    assert {s["facility"] for s in worklist["studies"]} == {"fac-a"}
    assert (detail["study_id"], detail["facility"], detail["patient_ref"]) == (
        uuid.UUID(study), "fac-a", "PID-A1^^^fac-a"), detail
    assert findings["route"] == "/api/v1/studies/{study}/findings"
    # the refusal names what was asked for: the other facility's study and patient
    assert (refused["outcome"], refused["reason"], refused["patient_ref"]) == (
        "refused", "STUDY_NOT_FOUND", "PID-B1^^^fac-b"), refused
    assert (anonymous["user"], anonymous["actor"], anonymous["reason"]) == (
        "", "anonymous", "MISSING_TOKEN"), anonymous


@pytest.mark.parametrize(("trusted", "recorded"), [("127.0.0.1", "203.0.113.5"),
                                                   ("10.9.9.9", "127.0.0.1")])
async def test_the_client_address_is_forwarded_only_by_a_trusted_proxy_and_shutdown_flushes(
        db: Database, tmp_path: Path, trusted: str, recorded: str) -> None:
    async with review_env(db, tmp_path) as env:
        port = free_port()
        settings = env.settings.model_copy(update={"gateway_port": port,
                                                   "trusted_proxies": trusted,
                                                   "log_level": "WARNING"})
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run(settings, stop, started=started))
        await asyncio.wait_for(started.wait(), 10)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                login = await http.post("/api/v1/auth/login",
                                        json={"username": "rad-a", "password": PASSWORD})
                auth = {"Authorization": f"Bearer {login.json()['access_token']}",
                        "X-Forwarded-For": "203.0.113.5"}
                reply = await http.get(f"/api/v1/studies/{env.seeded.study}", headers=auth)
                assert reply.status_code == 200, reply.text
        finally:
            stop.set()  # a normal shutdown: the queued record is sent before the process ends
            await asyncio.wait_for(task, 20)
        events = await _phi_events(db, 1, timeout_s=0.5)
    assert [(e["what"], e["client_address"]) for e in events] == [("study", recorded)], events


async def test_what_the_access_audit_costs_on_frames(database_url: str, nats: Any,
                                                     tmp_path: Path) -> None:
    """200 WADO-RS frame requests through the gateway (real ingest, real workflow storing the
    records), with the access audit and with its middleware taken out, alternating four times;
    prints ms per request and the medians (docs/audit.md quotes them). Fails if a record is
    missing."""
    import time

    from protos.sidecar.ingest.v1 import ingest_service_pb2 as ipb
    from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
    from review_gateway.app import create_app
    from review_gateway.auth import tokens
    from review_gateway.settings import GatewaySettings
    from review_gateway.web.access_audit import AccessAuditMiddleware
    from sidecar_core.messaging.subjects import Topology
    from sidecar_core.security.session_tokens import KeySet
    from sidecar_core.serving.grpc_server import GrpcServer
    from tests import pki as test_pki
    from tests.helpers import add_facility, to_bytes
    from tests.integration.test_dimse import running_ingest
    from tests.integration.test_wado import SECRET, _corpus, serve
    from workflow_svc.review import servicer as review_servicer

    add_facility(database_url, "north", quiet_period_s=60)
    corpus = _corpus()
    requests_per_run = 200
    async with running_ingest(database_url, nats, tmp_path, dicom_port=0,
                              token_secret=SECRET) as svc:
        async with test_pki.aio_channel(f"127.0.0.1:{svc.grpc_port}", "operator") as channel:
            reply = await ipb_grpc.IngestServiceStub(channel).IngestInstances(
                ipb.IngestInstancesRequest(facility="north", items=[
                    ipb.IngestInstancesRequestItem(dicom=to_bytes(d)) for d in corpus.ct]))
            assert [r.reason for r in reply.results] == [""] * len(corpus.ct)
        db = Database(database_url)
        workflow = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
        review_servicer.register(workflow, db, Topology(), keys=KeySet(SECRET.encode()))
        workflow_port = await workflow.start()
        test_pki.install(tmp_path)
        settings = GatewaySettings(data_dir=tmp_path, token_secret=SECRET,
                                   ingest_address=f"127.0.0.1:{svc.grpc_port}",
                                   workflow_address=f"127.0.0.1:{workflow_port}")
        audited = create_app(settings)
        bare = create_app(settings)
        bare.user_middleware = [m for m in bare.user_middleware
                                if m.cls is not AccessAuditMiddleware]
        token = tokens.issue(SECRET.encode(), user_id="u1", username="rad",
                             role="radiologist", facilities=["north"], ttl_s=3600)
        ds = corpus.ct[0]
        path = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                f"/instances/{ds.SOPInstanceUID}/frames/1")
        headers = {"Authorization": f"Bearer {token}", "Accept":
                   'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
        timings: dict[str, list[float]] = {"with the access audit": [], "without": []}
        try:
            with serve(audited) as with_url, serve(bare) as without_url:
                async with httpx.AsyncClient(timeout=60) as http:
                    for url in (with_url, without_url):  # warm the caches of both
                        assert (await http.get(url + path, headers=headers)).status_code == 200
                    for _ in range(ROUNDS):
                        for name, url in (("with the access audit", with_url),
                                          ("without", without_url)):
                            started = time.perf_counter()
                            for _ in range(requests_per_run):
                                got = await http.get(url + path, headers=headers)
                                assert got.status_code == 200
                            timings[name].append(
                                (time.perf_counter() - started) * 1000 / requests_per_run)
                expected = 1 + ROUNDS * requests_per_run
                deadline = time.monotonic() + 30
                stored = 0
                while time.monotonic() < deadline:
                    async with db.read() as s:
                        stored = int((await s.execute(text(
                            "SELECT count(*) FROM audit_events WHERE type = 'phi.accessed' "
                            "AND context->>'what' = 'frames'"))).scalar_one())
                    if stored >= expected:
                        break
                    await asyncio.sleep(0.2)
                assert stored == expected, (stored, expected)
        finally:
            await workflow.stop(0)
            await db.close()
    print(f"\nms per frame request ({ROUNDS} runs of {requests_per_run}, alternating): "
          + "; ".join(f"{name}: {' / '.join(f'{t:.2f}' for t in runs)} (median "
                      f"{statistics.median(runs):.2f})" for name, runs in timings.items()))
