"""The gateway's access audit queue and route classification: which paths are patient data,
one record per request, flushed at shutdown, fail-closed when full, permanent errors dropped
loudly rather than jamming the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.errors import ApiError
from review_gateway.web import access_audit
from review_gateway.web.access_audit import AccessAuditMiddleware, AccessAuditor, classify

S, SE, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/api/v1/studies", ("worklist", {})),
    ("GET", "/api/v1/studies/abc", ("study", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/findings", ("findings", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/findings/f1/history", ("findings", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/assets/a1", ("assets", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/series/x/slices/3/viewport/lung", ("assets",
                                                                    {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/draft", ("drafts", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/chat", ("chat", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/priors", ("priors", {"study_id": "abc"})),
    ("GET", "/api/v1/studies/abc/audit", ("audit", {"study_id": "abc"})),
    ("GET", "/api/v1/analytics/rates.csv", ("export", {})),
    ("GET", "/dicomweb/studies", ("dicomweb-qido", {})),
    ("GET", f"/dicomweb/studies/{S}/series", ("dicomweb-qido", {"study": S})),
    ("GET", f"/dicomweb/studies/{S}", ("wado", {"study": S})),
    ("GET", f"/dicomweb/studies/{S}/series/{SE}/metadata", ("metadata",
                                                           {"study": S, "series": SE})),
    ("GET", f"/dicomweb/studies/{S}/series/{SE}/instances/{SOP}/frames/1,2,3",
     ("frames", {"study": S, "series": SE})),
    ("GET", f"/dicomweb/studies/{S}/series/{SE}/instances/{SOP}/frames/1/rendered",
     ("rendered", {"study": S, "series": SE})),
    ("GET", f"/dicomweb/studies/{S}/thumbnail", ("rendered", {"study": S})),
    ("POST", "/dicomweb/studies", None),  # STOW-RS audits itself
    ("GET", "/api/v1/me", None),
    ("GET", "/healthz", None),
    ("POST", "/api/v1/studies/abc/access-events", None),
])
def test_classify(method: str, path: str, expected: Any) -> None:
    assert classify(method, path) == expected


def test_a_record_names_the_request_not_the_token() -> None:
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "client": ("10.1.2.3", 5000),
        "path": f"/dicomweb/studies/{S}/series/{SE}/instances/{SOP}/frames/1,2,3,4",
        "query_string": b""}
    access = access_audit.access_of(scope, "frames", {"study": S, "series": SE}, 200)
    assert (access.what, access.count, access.client_address, access.user_token) == (
        "frames", 4, "10.1.2.3", "")
    assert list(access.study_instance_uids) == [S] and list(access.series_instance_uids) == [SE]
    assert access.route == ("/dicomweb/studies/{study}/series/{series}/instances/{instance}"
                            "/frames/{frames}")


def test_qido_studies_are_listed_once_each() -> None:
    item = '{"0020000D":{"vr":"UI","Value":["%s"]},"00100020":{"vr":"LO","Value":["P"]}}'
    assert access_audit.qido_studies([item % "1.2", item % "1.3", item % "1.2"]) == ["1.2",
                                                                                    "1.3"]


async def test_close_flushes_what_is_queued() -> None:
    sent: list[int] = []

    async def send(request: rpb.RecordPhiAccessRequest) -> None:
        sent.append(len(request.accesses))

    auditor = AccessAuditor(send, interval_s=3600, batch=2)  # nothing leaves on its own
    auditor.put(rpb.PhiAccess(what="study", status=200))
    await asyncio.sleep(0.05)
    assert sent == []
    await auditor.close()
    assert sent == [1]


async def test_a_failing_store_is_retried_and_a_refusing_one_dropped() -> None:
    calls: list[str] = []

    async def down_then_up(request: rpb.RecordPhiAccessRequest) -> None:
        calls.append("try")
        if len(calls) < 3:
            raise ApiError(503, "UNAVAILABLE", "UNAVAILABLE", "workflow down")

    auditor = AccessAuditor(down_then_up, interval_s=0.01, retry_s=0.01)
    auditor.put(rpb.PhiAccess(what="study", status=200))
    await auditor.close()
    assert calls == ["try"] * 3

    async def refusing(request: rpb.RecordPhiAccessRequest) -> None:
        raise ApiError(400, "INVALID_ARGUMENT", "INVALID_ACCESS_WHAT", "bad")

    dropped = AccessAuditor(refusing, interval_s=0.01, retry_s=0.01)
    before = access_audit.DROPPED._value.get()
    dropped.put(rpb.PhiAccess(what="x", status=200))
    await dropped.close(timeout_s=2)
    assert access_audit.DROPPED._value.get() == before + 1


async def test_a_full_queue_refuses_patient_data_with_503_and_counts_it() -> None:
    async def never(request: rpb.RecordPhiAccessRequest) -> None:
        raise ApiError(503, "UNAVAILABLE", "UNAVAILABLE", "workflow down")

    auditor = AccessAuditor(never, max_queued=2, interval_s=0.01, retry_s=0.05)
    served: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = AccessAuditMiddleware(app, auditor)
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def scope(path: str) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": path, "client": ("127.0.0.1", 1),
                "query_string": b""}

    before = access_audit.FULL._value.get()
    for _ in range(3):
        await middleware(scope("/api/v1/studies/abc"), None, send)
    await middleware(scope("/api/v1/me"), None, send)  # not patient data: served
    assert statuses == [200, 200, 503, 200]
    assert served == ["/api/v1/studies/abc"] * 2 + ["/api/v1/me"]
    assert access_audit.FULL._value.get() == before + 1
    auditor.send = _ok
    await auditor.close()


async def _ok(request: rpb.RecordPhiAccessRequest) -> None:
    return None
