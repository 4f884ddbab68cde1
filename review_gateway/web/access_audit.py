"""The PHI access audit of the gateway: one access record per HTTP request on a patient-data
route (served, or refused with 401/403/404), written by the server whatever the browser does.

`AccessAuditMiddleware` classifies the request by its path, lets it run, and queues what it
touched (the studies and series of its path, or those a handler `note`d: a worklist page, a
QIDO answer), who asked (the request's verified token, kept only to be verified again by the
workflow service), from where (the client address as uvicorn gives it: the peer, or
X-Forwarded-For from SIDECAR_TRUSTED_PROXIES only) and the status. `AccessAuditor` sends the
queue to the workflow service in batches (ReviewService.RecordPhiAccess), in the background,
and flushes it at shutdown. The queue is bounded; when it is full, patient-data requests are
refused with 503 AUDIT_BACKLOG (fail closed: nothing is served unaudited). docs/audit.md,
"Access audit".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from review_gateway.errors import error_body

log = logging.getLogger(__name__)

PRINCIPAL_KEY = "sidecar.principal"  # scope key: the request's verified token (sessions.py)
NOTE_KEY = "sidecar.phi_note"  # scope key: what a handler returned (note())
REASON_KEY = "sidecar.refusal_reason"  # scope key: the ApiError reason of a refusal
MAX_LISTED = 100  # studies / series named in one record (the workflow's bound too)
MAX_QUERY = 1000
REFUSED = frozenset({401, 403, 404})
# Errors of a batch that a retry cannot fix (a bug or a misconfiguration, logged loudly).
PERMANENT = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNIMPLEMENTED",
                       "PERMISSION_DENIED", "UNAUTHENTICATED"})

QUEUED = Gauge("sidecar_access_audit_queued",
               "PHI access records waiting to be stored by the workflow service")
SENT = Counter("sidecar_access_audit_sent", "PHI access records stored by the workflow service")
SEND_FAILURES = Counter("sidecar_access_audit_send_failures",
                        "Failed attempts to store a batch of PHI access records (retried)")
DROPPED = Counter("sidecar_access_audit_dropped",
                  "PHI access records the workflow service refused for good (logged)")
FULL = Counter("sidecar_access_audit_queue_full",
               "Patient-data requests refused (503) because the access audit queue was full")

_UID = r"[0-9.]{1,64}"
_ID = r"[^/]{1,64}"
# (method set, path pattern, what). First match wins; the path's named groups are studies and
# series. Only reads are records of access: a write audits itself (review.*, draft.*).
_ROUTES: list[tuple[re.Pattern[str], str]] = [(re.compile(p + r"\Z"), what) for p, what in (
    (r"/api/v1/studies", "worklist"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})", "study"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/findings(/{_ID}/history)?", "findings"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/assets/{_ID}", "assets"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/series/{_ID}/slices/[^/]+/(viewport|overlay)/[^/]+",
     "assets"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/draft", "drafts"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/chat", "chat"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/priors", "priors"),
    (rf"/api/v1/studies/(?P<study_id>{_ID})/audit", "audit"),
    (r"/api/v1/analytics(/[a-z_]{1,32}\.csv)?", "export"),
    (r"/dicomweb/(studies|series|instances)", "dicomweb-qido"),
    (rf"/dicomweb/studies/(?P<study>{_ID})/(series|instances)", "dicomweb-qido"),
    (rf"/dicomweb/studies/(?P<study>{_ID})/series/(?P<series>{_ID})/instances",
     "dicomweb-qido"),
    (rf"/dicomweb/studies/(?P<study>{_ID})(/series/(?P<series>{_ID})(/instances/{_ID})?)?"
     r"/metadata", "metadata"),
    (rf"/dicomweb/studies/(?P<study>{_ID})/series/(?P<series>{_ID})/instances/{_ID}"
     r"/frames/[^/]{1,4096}", "frames"),
    (rf"/dicomweb/studies/(?P<study>{_ID})(/series/(?P<series>{_ID})(/instances/{_ID}"
     r"(/frames/[^/]{1,64})?)?)?/(rendered|thumbnail)", "rendered"),
    (rf"/dicomweb/studies/(?P<study>{_ID})(/series/(?P<series>{_ID})(/instances/{_ID}"
     r"(/bulkdata/[0-9a-fA-F]{8})?)?)?", "wado"),
)]
_READS = ("GET", "HEAD")
_QIDO_STUDY = re.compile(r'"0020000D"\s*:\s*\{[^}]*?"Value"\s*:\s*\[\s*"([0-9.]{1,64})"')


def classify(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(what, path ids) of a patient-data route, or None."""
    if path.startswith("/dicomweb/"):
        if method not in _READS:  # STOW-RS stores; it audits itself (study.received)
            return None
    elif not path.startswith("/api/v1/"):
        return None
    for pattern, what in _ROUTES:
        found = pattern.match(path)
        if found:
            return what, {k: v for k, v in found.groupdict().items() if v}
    return None


def note(scope: MutableMapping[str, Any], *, study_ids: list[str] | None = None,
         study_uids: list[str] | None = None, count: int | None = None) -> None:
    """Records what a handler returned (a worklist page's studies, a search's matches)."""
    scope[NOTE_KEY] = {"study_ids": (study_ids or [])[:MAX_LISTED],
                       "study_uids": (study_uids or [])[:MAX_LISTED], "count": count}


def qido_studies(dicom_json: list[str]) -> list[str]:
    """The distinct Study Instance UIDs of a QIDO answer (DICOM JSON datasets), in order."""
    seen: dict[str, None] = {}
    for item in dicom_json:
        found = _QIDO_STUDY.search(item)
        if found:
            seen.setdefault(found.group(1))
            if len(seen) >= MAX_LISTED:
                break
    return list(seen)


def _frame_count(path: str) -> int:
    tail = path.rsplit("/frames/", 1)[-1]
    return len([f for f in tail.split(",") if f.strip()])


def _template(path: str) -> str:
    """The path with its ids as placeholders (the audit keeps ids in their own fields)."""
    parts = path.split("/")
    names = {"studies": "{study}", "series": "{series}", "instances": "{instance}",
             "assets": "{asset}", "findings": "{finding}", "slices": "{slice}",
             "frames": "{frames}", "bulkdata": "{tag}"}
    out = []
    for i, part in enumerate(parts):
        prev = parts[i - 1] if i else ""
        out.append(names[prev] if prev in names and part else part)
    return "/".join(out)[:200]


def access_of(scope: dict[str, Any], what: str, ids: dict[str, str], status: int
              ) -> rpb.PhiAccess:
    """The record of one request as the workflow service stores it."""
    me = scope.get(PRINCIPAL_KEY)
    path: str = scope.get("path", "")
    client = scope.get("client")
    noted: dict[str, Any] = scope.get(NOTE_KEY) or {}
    access = rpb.PhiAccess(
        user_token=getattr(me, "token", "") or "", client_address=client[0] if client else "",
        what=what, method=scope.get("method", ""), route=_template(path), status=status,
        reason=str(scope.get(REASON_KEY, ""))[:64])
    access.at.FromDatetime(datetime.now(UTC))
    if "study_id" in ids:
        access.study_ids.append(ids["study_id"])
    access.study_ids.extend(noted.get("study_ids", []))
    if "study" in ids:
        access.study_instance_uids.append(ids["study"])
    access.study_instance_uids.extend(noted.get("study_uids", []))
    if "series" in ids:
        access.series_instance_uids.append(ids["series"])
    count = noted.get("count")
    if count is None:
        count = _frame_count(path) if what == "frames" else (1 if status < 400 else 0)
    access.count = int(count)
    query = scope.get("query_string", b"")
    if query and what in ("worklist", "dicomweb-qido", "export"):
        access.query = query.decode("latin-1")[:MAX_QUERY]
    return access


Send = Callable[[rpb.RecordPhiAccessRequest], Awaitable[Any]]


class AccessAuditor:
    """A bounded queue of access records, sent in batches by one background task."""

    def __init__(self, send: Send, *, max_queued: int = 10000, batch: int = 500,
                 interval_s: float = 0.2, retry_s: float = 1.0) -> None:
        self.send = send
        self.max_queued = max_queued
        self.batch = batch
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._queue: deque[rpb.PhiAccess] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False

    def admit(self) -> bool:
        """Whether a patient-data request may be served (its record has room)."""
        return len(self._queue) < self.max_queued and not self._closing

    def put(self, access: rpb.PhiAccess) -> None:
        self._queue.append(access)  # admitted before it ran: may exceed the bound by in-flight
        QUEUED.set(len(self._queue))
        if self._task is None:
            # a context of its own: the task must not forward the first request's user token
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="access-audit", context=contextvars.Context())
        if len(self._queue) >= self.batch:
            self._wake.set()

    async def _send_some(self) -> None:
        take = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
        await self.send(rpb.RecordPhiAccessRequest(accesses=take))
        for _ in take:
            self._queue.popleft()
        SENT.inc(len(take))
        QUEUED.set(len(self._queue))

    async def _run(self) -> None:
        while not (self._closing and not self._queue):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            while self._queue:
                try:
                    await self._send_some()
                except Exception as exc:
                    SEND_FAILURES.inc()
                    if getattr(exc, "code", "") in PERMANENT:  # never stored: not retried
                        dropped = min(self.batch, len(self._queue))
                        for _ in range(dropped):
                            self._queue.popleft()
                        DROPPED.inc(dropped)
                        QUEUED.set(len(self._queue))
                        log.error("the workflow service refused %d PHI access records: %s",
                                  dropped, exc)
                        continue
                    # kept and retried: the workflow service may be down or restarting
                    log.warning("could not store %d PHI access records (%s); retrying",
                                len(self._queue), exc)
                    await asyncio.sleep(self.retry_s)

    async def close(self, timeout_s: float = 15.0) -> None:
        """Sends what is queued and stops (at shutdown, after the last request); records still
        unsent after `timeout_s` (the workflow service is down) are logged as lost."""
        self._closing = True
        if self._task is None and self._queue:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="access-audit", context=contextvars.Context())
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._queue:
            log.error("%d PHI access records could not be stored before shutdown",
                      len(self._queue))


class AccessAuditMiddleware:
    """ASGI middleware: an access record for every patient-data request (see module doc)."""

    def __init__(self, app: Any, auditor: AccessAuditor) -> None:
        self.app = app
        self.auditor = auditor

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = classify(scope["method"], scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        what, ids = found
        if not self.auditor.admit():
            FULL.inc()
            log.error("access audit queue full: refusing %s %s", scope["method"], what)
            body = json.dumps(error_body("UNAVAILABLE", "AUDIT_BACKLOG",
                                         "patient data is not served while its access audit "
                                         "cannot be stored; try again shortly")).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"retry-after", b"5"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        status = 0

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # reads served, and refusals of any method; other failures returned nothing
            if status and ((status < 400 and scope["method"] in _READS) or status in REFUSED):
                self.auditor.put(access_of(scope, what, ids, status))
