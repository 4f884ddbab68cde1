"""The review API through `sidecar up`: cookie login, worklist, live events, claim, decide, 409,
scoping of another facility's radiologist, logout."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from sidecar_synth import generate
from tests.acceptance.stack import SIDECAR, Stack, clean_env

PASSWORD = "review acceptance pass phrase"


class EventStream:
    """`GET /api/v1/events` read on a thread; `events` fills as `study` events arrive."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(30, read=None),
                                   headers={"Authorization": f"Bearer {token}"})
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.connected.wait(30), "the event stream did not open"

    def _run(self) -> None:
        try:
            with self.client.stream("GET", "/api/v1/events") as reply:
                assert reply.status_code == 200
                kind = ""
                for line in reply.iter_lines():
                    if line == ": connected":
                        self.connected.set()
                    elif line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: ") and kind == "study":
                        self.events.append(json.loads(line.removeprefix("data: ")))
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def close(self) -> None:
        self.client.close()
        self.thread.join(10)


def _wait(what: str, probe: Callable[[], Any], timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _login(stack: Stack, username: str) -> tuple[httpx.Client, str]:
    """A browser-like client: the session cookie, and the CSRF token for writes."""
    http = httpx.Client(base_url=stack.base_url, timeout=60)
    reply = http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    assert "sidecar_session" in http.cookies
    return http, str(reply.json()["csrf_token"])


@pytest.fixture(scope="module")
def radiologists(stack: Stack) -> dict[str, str]:
    """A radiologist of the module's north and one of its south: name → facility."""
    named = {"acc_rad_n": stack.north, "acc_rad_s": stack.south}
    for name, facility in named.items():
        done = stack.cli("user", "add", name, "--role", "radiologist", "--facility", facility,
                         "--password-stdin", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
    return named


def test_review_flow_by_cookie_with_live_events_and_scoping(
        stack: Stack, radiologists: dict[str, str], tmp_path: Path) -> None:
    north, csrf = _login(stack, "acc_rad_n")
    south, _ = _login(stack, "acc_rad_s")
    tokens = {n: stack.login(n, PASSWORD) for n in radiologists}
    streams = {n: EventStream(stack.base_url, tokens[n]) for n in radiologists}
    try:
        folder = tmp_path / "chest"
        generate("chest-ct", folder, 15, slices=48, nodules=2)  # 1.33 mm pixels: eligible
        first = pydicom.dcmread(next(iter(sorted(folder.rglob("*.dcm")))),
                                stop_before_pixels=True)
        sent = subprocess.run(
            [SIDECAR, "ingest", str(folder), "--facility", stack.north, "--complete",
             "--target", stack.address("ingest"), "--data-dir", str(stack.data_dir)],
            capture_output=True, text=True, timeout=300, env=clean_env())
        assert sent.returncode == 0, sent.stderr

        def listed() -> dict[str, Any] | None:
            rows = north.get("/api/v1/studies").json()["studies"]
            return next((r for r in rows
                         if r["study_instance_uid"] == first.StudyInstanceUID), None)

        row = _wait("the study in the worklist", listed)
        study = row["id"]
        assert row["patient"]["id"] == str(first.PatientID)
        # The study was sent while the streams were open: its radiologist hears of it.
        _wait("a live event", lambda: any(e["id"] == study for e in streams["acc_rad_n"].events))
        last: list[Any] = []

        def with_findings() -> dict[str, Any] | None:
            last[:] = [listed()]
            return last[0] if last[0] and last[0]["ai_status"] == "findings" else None

        try:
            row = _wait("AI findings", with_findings)
        except AssertionError:
            raise AssertionError(f"no AI findings; the row: {last}") from None
        assert row["finding_count"] >= 1 and row["max_confidence"] > 0

        assert north.post(f"/api/v1/studies/{study}/claim").status_code == 403  # no CSRF token
        write = {"X-CSRF-Token": csrf}
        claimed = north.post(f"/api/v1/studies/{study}/claim", headers=write)
        assert claimed.status_code == 200, claimed.text
        assert (claimed.json()["state"], claimed.json()["assigned_to"]) == ("assigned",
                                                                            "acc_rad_n")
        opened = north.post(f"/api/v1/studies/{study}/open", headers=write)
        assert opened.json()["state"] == "in_review"
        findings = north.get(f"/api/v1/studies/{study}/findings").json()["findings"]
        target = findings[0]
        decisions = f"/api/v1/studies/{study}/findings/{target['id']}/decisions"
        accepted = north.post(decisions, headers=write,
                              json={"action": "accept", "expected_version": target["version"]})
        assert accepted.status_code == 200 and accepted.json()["decision"]["action"] == "accept"
        stale = north.post(decisions, headers=write, json={
            "action": "reject", "reason": "artifact", "expected_version": target["version"]})
        assert stale.status_code == 409
        assert stale.json()["current"]["version"] == target["version"] + 1
        _wait("the claim's live event", lambda: any(
            e["id"] == study and e["assigned_to"] == "acc_rad_n"
            for e in streams["acc_rad_n"].events))

        # The other facility's radiologist sees none of it.
        assert all(r["id"] != study for r in south.get("/api/v1/studies").json()["studies"])
        for path in ("", "/findings", "/audit", f"/findings/{target['id']}/history"):
            assert south.get(f"/api/v1/studies/{study}{path}").status_code == 404, path
        qido = south.get("/dicomweb/studies",
                         params={"StudyInstanceUID": first.StudyInstanceUID})
        assert qido.status_code in (200, 204) and (qido.status_code == 204 or qido.json() == [])
        assert all(e["id"] != study for e in streams["acc_rad_s"].events)

        session = north.cookies["sidecar_session"]
        logout = north.post("/api/v1/auth/logout", headers=write)
        assert logout.status_code == 204
        replayed = httpx.get(f"{stack.base_url}/api/v1/me", timeout=30,
                             cookies={"sidecar_session": session})
        assert replayed.status_code == 401
        assert replayed.json()["error"]["reason"] == "TOKEN_REVOKED"
        revoked = httpx.get(f"{stack.base_url}/api/v1/me", timeout=30,
                            headers={"Authorization": f"Bearer {tokens['acc_rad_n']}"})
        assert revoked.status_code == 200  # logging out one session leaves the others
        assert north.get("/api/v1/me").status_code == 401
    finally:
        for stream in streams.values():
            stream.close()
        north.close()
        south.close()
