"""Hostile inputs against the gateway of the shared HTTPS `sidecar up`, with its default bounds:
a JSON body over SIDECAR_MAX_JSON_BYTES (declared or chunked), a STOW-RS request streamed past
SIDECAR_MAX_STOW_BYTES while a normal study is stored beside it, and 50 parallel wrong logins
for one radiologist. Each is refused with the right status while the service keeps answering
and its memory stays bounded."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from review_gateway.settings import GatewaySettings
from tests.helpers import ct_slice, to_bytes
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

MiB = 1024 * 1024
DEFAULTS = GatewaySettings()
BOUNDARY = "bounds-boundary"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
RADIOLOGIST = "bounds_rad"
RAD_PASSWORD = "bounds radiologist horse staple"


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread while in use: `peak` and `before`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def part(data: bytes) -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"


def small_study() -> tuple[str, list[bytes]]:
    study, series = generate_uid(), generate_uid()
    return study, [to_bytes(ct_slice(study, series, z=float(z), accession="BOUNDS1"))
                   for z in range(3)]


def spool_fds(pid: int, spool: Path) -> list[str]:
    """The gateway's open files in its STOW spool folder (unnamed files show as deleted)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(spool)):
            found.append(target)
    return found


def test_json_body_over_the_limit_is_refused_with_413_declared_or_chunked(
        edge_stack: EdgeStack) -> None:
    limit = DEFAULTS.max_json_bytes
    assert limit == MiB
    login = "/api/v1/auth/login"
    big = json.dumps({"username": "x", "password": "y", "pad": "z" * (2 * 1000 * 1000)}).encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]

    with httpx.Client(base_url=edge_stack.base_url, verify=edge_stack.trusting(),
                      timeout=30) as http:
        for content in (big, chunked()):
            refused = http.post(login, content=content,
                                headers={"Content-Type": "application/json"})
            assert refused.status_code == 413, refused.text
            assert refused.json() == {"error": {
                "code": "RESOURCE_EXHAUSTED", "reason": "REQUEST_TOO_LARGE",
                "message": f"the request body exceeds {limit} bytes (SIDECAR_MAX_JSON_BYTES)"}}
            assert "strict-transport-security" in refused.headers
        # Just under the limit the body is read and judged as usual (a 65-character username
        # is invalid: 422, and no login is attempted).
        under = json.dumps({"username": "u" * 65, "password": "y", "pad": "z" * (limit - 200)})
        assert len(under) <= limit
        judged = http.post(login, content=under, headers={"Content-Type": "application/json"})
        assert judged.status_code == 422, judged.text
        assert http.get("/healthz").status_code == 200


def test_stow_past_the_request_limit_is_cut_at_it_while_a_normal_study_flows(
        edge_stack: EdgeStack) -> None:
    limit = DEFAULTS.max_stow_bytes
    gateway = edge_stack.children()["review_gateway.main"]
    spool = edge_stack.data_dir / "tmp" / "stow"
    token = edge_stack.login()
    first_study, first_parts = small_study()
    sent = [0]
    streaming = threading.Event()

    def hostile() -> Iterator[bytes]:
        """Two valid instances, then one part that never ends: up to 1.5 × the limit."""
        yield b"".join(part(p) for p in first_parts[:2])
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        chunk = b"\xa5" * MiB
        while sent[0] < limit * 3 // 2:
            sent[0] += len(chunk)
            if sent[0] > 256 * MiB:
                streaming.set()
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    def send_hostile() -> httpx.Response:
        with edge_stack.client(token) as http:
            return http.post(f"/dicomweb/studies?facility={edge_stack.north}",
                             content=hostile(), headers={"Content-Type": CONTENT_TYPE},
                             timeout=120)

    started = time.monotonic()
    with PeakRss(gateway) as memory, ThreadPoolExecutor(1) as pool:
        cut = pool.submit(send_hostile)
        assert streaming.wait(60), "the hostile request did not start streaming"
        # The part being received is in an unnamed spool file on disk, not in memory.
        assert spool_fds(gateway, spool), "no spool file open while a large part streams"
        study, parts = small_study()
        with edge_stack.client(token) as http:
            normal = http.post(f"/dicomweb/studies?facility={edge_stack.north}",
                               content=b"".join(part(p) for p in parts) + f"--{BOUNDARY}--\r\n"
                               .encode(), headers={"Content-Type": CONTENT_TYPE})
            assert normal.status_code == 200, normal.text
            assert len(normal.json()["00081199"]["Value"]) == 3
            assert not cut.done(), "the normal study was not stored while the other streamed"
        reply = cut.result(timeout=120)
    elapsed = time.monotonic() - started
    print(f"STOW cut after {sent[0] / MiB:.0f} MiB sent in {elapsed:.1f} s; gateway RSS "
          f"{memory.before / MiB:.0f} MiB before, peak +{memory.growth / MiB:.0f} MiB")
    # 413 at the limit: the server stopped reading there (the client could send 1.5 × it).
    assert reply.status_code == 413, reply.text[:500]
    assert sent[0] < limit + 64 * MiB
    # The two instances before the cut were stored and are reported (PS3.18 response).
    assert reply.headers["content-type"].startswith("application/dicom+json")
    assert "SIDECAR_MAX_STOW_BYTES" in reply.headers["warning"]
    stored = [r["00081155"]["Value"][0] for r in reply.json()["00081199"]["Value"]]
    assert len(stored) == 2
    assert memory.growth < 200 * MiB
    assert spool_fds(gateway, spool) == [] and list(spool.iterdir()) == []
    with edge_stack.client(token) as http:
        for uid, count in ((study, 3), (first_study, 2)):
            found = http.get("/dicomweb/instances", params={"StudyInstanceUID": uid})
            assert found.status_code == 200 and len(found.json()) == count, found.text
        assert http.get("/healthz").status_code == 200
    # The declared size alone is enough to refuse, before a byte of the body is read.
    head = (f"POST /dicomweb/studies?facility={edge_stack.north} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {limit + 1}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", edge_stack.ports["gateway"]), timeout=30) as raw, \
            edge_stack.trusting().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"REQUEST_TOO_LARGE" in answer and b"connection: close" in answer.lower()


def test_fifty_parallel_wrong_logins_slow_down_but_do_not_lock_the_radiologist_out(
        edge_stack: EdgeStack) -> None:
    done = edge_stack.cli("user", "add", RADIOLOGIST, "--role", "radiologist", "--facility",
                          edge_stack.north, "--password-stdin", stdin=RAD_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    children = edge_stack.children()
    url = f"{edge_stack.base_url}/api/v1/auth/login"

    def attempt(password: str) -> httpx.Response:
        return httpx.post(url, json={"username": RADIOLOGIST, "password": password},
                          verify=edge_stack.trusting(), timeout=60)

    started = time.monotonic()
    with PeakRss(children["workflow_svc.main"]) as workflow, \
            PeakRss(children["review_gateway.main"]) as gateway, \
            ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(attempt, [f"wrong {i}" for i in range(50)]))
        health = httpx.get(f"{edge_stack.base_url}/healthz", verify=edge_stack.trusting(),
                           timeout=30)
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in replies]
    print(f"50 parallel wrong logins in {elapsed:.1f} s: {statuses.count(401)} checked (401), "
          f"{statuses.count(429)} refused early (429); RSS growth workflow "
          f"+{workflow.growth / MiB:.0f} MiB, gateway +{gateway.growth / MiB:.0f} MiB")
    assert health.status_code == 200
    assert set(statuses) <= {401, 429}
    # Only the free failures ran argon2id; the rest waited on the back-off and were refused.
    assert statuses.count(401) == 5, statuses
    refused = [r for r in replies if r.status_code == 429]
    assert all(r.json()["error"]["reason"] == "LOGIN_RATE_LIMITED" for r in refused)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert workflow.growth < 200 * MiB and gateway.growth < 100 * MiB
    # Not a lock-out: the right password works once the back-off has passed.
    right = attempt(RAD_PASSWORD)
    if right.status_code == 429:  # within a second of the last failure: a wait, not a lock-out
        assert int(right.headers["Retry-After"]) <= 2
        time.sleep(int(right.headers["Retry-After"]) + 0.2)
        right = attempt(RAD_PASSWORD)
    assert right.status_code == 200, right.text
    assert right.json()["username"] == RADIOLOGIST
    rows = edge_stack.sql("select type, count(*) from audit_events where type like 'auth.login%%' "
                          "and context->>'username' = %s group by type", RADIOLOGIST)
    counts = dict(rows)
    assert counts["auth.login_failed"] == 5 and counts["auth.login_succeeded"] == 1
    assert counts["auth.login_rate_limited"] == 1  # the flood is one event (coalesced)
