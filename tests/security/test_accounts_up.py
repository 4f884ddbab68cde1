"""The account lifecycle on the running product (`sidecar up`, shared HTTPS stack): a user
disabled, revoked or given a new password by the CLI or the admin API is refused on the next
request and on an open event stream within the revocation cache time; every change audited
with its operator and door; a non-admin is refused the admin API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

PASSWORD = "radiologist password 1"
NEW_PASSWORD = "radiologist password 2"
# SIDECAR_REVOCATION_CACHE_S of the stack (its default), and the time a refusal may take: a
# cache of the gateway and one of each service, plus a margin for a loaded machine.
CACHE_S = 5.0
WITHIN_S = 2 * CACHE_S + 10.0


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    return edge_stack


def _user(stack: EdgeStack, name: str, role: str = "radiologist") -> str:
    extra = ["--facility", stack.north] if role == "radiologist" else []
    done = stack.cli("user", "add", name, "--role", role, *extra, "--password-stdin",
                     "--operator", "setup", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    return name


def _login(stack: EdgeStack, name: str, password: str = PASSWORD) -> httpx.Response:
    with httpx.Client(base_url=stack.base_url, verify=stack.trusting(), timeout=30) as http:
        return http.post("/api/v1/auth/login", json={"username": name, "password": password})


def _token(stack: EdgeStack, name: str, password: str = PASSWORD) -> str:
    reply = _login(stack, name, password)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def _refused_within(call: Callable[[], httpx.Response], seconds: float = WITHIN_S
                    ) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    while True:
        reply = call()
        if reply.status_code != 200 or time.monotonic() - start > seconds:
            return reply, time.monotonic() - start
        time.sleep(0.5)


def _worklist(stack: EdgeStack, token: str) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        with stack.client(token) as http:
            return http.get("/api/v1/studies")
    return call


class _Stream:
    """An open `/api/v1/events` stream read in a thread: when it ended and its last lines."""

    def __init__(self, stack: EdgeStack, token: str) -> None:
        self.lines: list[str] = []
        self.ended_at: float | None = None
        self.opened = threading.Event()
        self.status = 0
        self.thread = threading.Thread(target=self._read, args=(stack, token), daemon=True)
        self.thread.start()
        assert self.opened.wait(30), "the event stream did not open"
        assert self.status == 200

    def _read(self, stack: EdgeStack, token: str) -> None:
        with stack.client(token) as http, http.stream(
                "GET", "/api/v1/events", timeout=httpx.Timeout(30, read=120)) as reply:
            self.status = reply.status_code
            self.opened.set()
            for line in reply.iter_lines():
                self.lines.append(line)
        self.ended_at = time.monotonic()


def _reason(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["reason"])


def _audit(stack: EdgeStack, kind: str, username: str) -> list[tuple[Any, ...]]:
    return stack.sql("SELECT actor, context->>'operator', context->>'via' FROM audit_events "
                     "WHERE type = %s AND context->>'username' = %s ORDER BY seq",
                     kind, username)


def test_cli_disable_refuses_the_next_call_and_the_open_stream_then_enable(
        stack: EdgeStack) -> None:
    name = _user(stack, "acct_rad_disable")
    token = _token(stack, name)
    assert _worklist(stack, token)().status_code == 200
    stream = _Stream(stack, token)

    done = stack.cli("user", "disable", name, "--operator", "privacy-office")
    assert done.returncode == 0, done.stdout + done.stderr
    disabled_at = time.monotonic()
    reply, took = _refused_within(_worklist(stack, token))
    assert reply.status_code == 401, (reply.status_code, reply.text, took)
    assert _reason(reply) == "ACCOUNT_DISABLED"
    stream.thread.join(WITHIN_S + 15)  # the stream re-checks every cache period, busy or idle
    assert stream.ended_at is not None, "the event stream of a disabled user stayed open"
    assert stream.ended_at - disabled_at <= WITHIN_S + 5, stream.ended_at - disabled_at
    assert any("ACCOUNT_DISABLED" in line for line in stream.lines), stream.lines
    print(f"disabled: next call refused after {took:.1f} s, event stream ended after "
          f"{stream.ended_at - disabled_at:.1f} s (cache {CACHE_S} s)")
    refused = _login(stack, name)
    assert refused.status_code == 403 and _reason(refused) == "ACCOUNT_DISABLED"
    listed = stack.cli("user", "list")
    assert any(line.split()[:1] == [name] and line.split()[-1] == "disabled"
               for line in listed.stdout.splitlines()), listed.stdout
    assert _audit(stack, "user.disabled", name) == [
        ("operator:privacy-office", "privacy-office", "cli")]

    done = stack.cli("user", "enable", name, "--operator", "privacy-office")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _worklist(stack, _token(stack, name))().status_code == 200
    assert _audit(stack, "user.enabled", name) == [
        ("operator:privacy-office", "privacy-office", "cli")]
    assert _audit(stack, "user.created", name) == [("operator:setup", "setup", "cli")]


def test_revoke_sessions_ends_every_session_of_the_user(stack: EdgeStack) -> None:
    name = _user(stack, "acct_rad_revoke")
    first, second = _token(stack, name), _token(stack, name)
    time.sleep(1.1)  # a token's iat is whole seconds: one of the revocation's second survives
    done = stack.cli("user", "revoke-sessions", name, "--operator", "it-desk")
    assert done.returncode == 0, done.stdout + done.stderr
    for token in (first, second):
        reply, took = _refused_within(_worklist(stack, token))
        assert reply.status_code == 401, (reply.text, took)
        assert _reason(reply) == "SESSIONS_REVOKED"
    time.sleep(1.1)
    assert _worklist(stack, _token(stack, name))().status_code == 200  # may log in again
    assert _audit(stack, "user.sessions_revoked", name) == [("operator:it-desk", "it-desk", "cli")]


def test_reset_password_the_old_fails_the_new_works(stack: EdgeStack) -> None:
    name = _user(stack, "acct_rad_reset")
    old = _token(stack, name)
    time.sleep(1.1)
    done = stack.cli("user", "reset-password", name, "--password-stdin", "--operator", "it-desk",
                     stdin=NEW_PASSWORD + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _login(stack, name).status_code == 401
    assert _worklist(stack, _token(stack, name, NEW_PASSWORD))().status_code == 200
    reply, _ = _refused_within(_worklist(stack, old))
    assert reply.status_code == 401 and _reason(reply) == "SESSIONS_REVOKED"
    events = stack.sql("SELECT context::text FROM audit_events WHERE type = 'user.password_reset' "
                       "AND context->>'username' = %s", name)
    assert len(events) == 1 and NEW_PASSWORD not in events[0][0]


def test_admin_api_does_the_same_audited_with_the_admin(stack: EdgeStack) -> None:
    name = _user(stack, "acct_rad_api")
    token = _token(stack, name)
    with stack.client() as admin:
        listed = admin.get("/api/v1/admin/users")
        assert listed.status_code == 200, listed.text
        mine = [u for u in listed.json()["users"] if u["username"] == name]
        assert mine and mine[0]["disabled"] is False and mine[0]["facility"] == stack.north
        reply = admin.post(f"/api/v1/admin/users/{name}/disable")
        assert reply.status_code == 200 and reply.json()["changed"] is True, reply.text
        refused, _ = _refused_within(_worklist(stack, token))
        assert refused.status_code == 401 and _reason(refused) == "ACCOUNT_DISABLED"
        assert admin.post(f"/api/v1/admin/users/{name}/enable").json()["changed"] is True
        time.sleep(1.1)
        reply = admin.post(f"/api/v1/admin/users/{name}/reset-password",
                           json={"password": NEW_PASSWORD})
        assert reply.status_code == 200, reply.text
        assert _login(stack, name).status_code == 401
        later = _token(stack, name, NEW_PASSWORD)
        time.sleep(1.1)
        assert admin.post(f"/api/v1/admin/users/{name}/revoke-sessions").status_code == 200
        refused, _ = _refused_within(_worklist(stack, later))
        assert refused.status_code == 401 and _reason(refused) == "SESSIONS_REVOKED"
        last_admin = admin.post(f"/api/v1/admin/users/{stack.admin}/disable")
        # other modules may have added admins: refused only when it is the last enabled one
        assert last_admin.status_code in (200, 409), last_admin.text
        if last_admin.status_code == 409:
            assert _reason(last_admin) == "LAST_ADMIN"
        else:
            assert admin.post(f"/api/v1/admin/users/{stack.admin}/enable").status_code in (
                200, 401)
    for kind in ("user.disabled", "user.enabled", "user.password_reset",
                 "user.sessions_revoked"):
        assert _audit(stack, kind, name) == [
            (f"operator:{stack.admin}", stack.admin, "api")], kind


def test_a_non_admin_is_refused_the_admin_api(stack: EdgeStack) -> None:
    name = _user(stack, "acct_rad_nonadmin")
    auditor = _user(stack, "acct_auditor", role="auditor")
    with stack.client(_token(stack, name)) as rad:
        assert rad.get("/api/v1/admin/users").status_code == 403
        reply = rad.post(f"/api/v1/admin/users/{auditor}/disable")
        assert reply.status_code == 403 and _reason(reply) == "ADMIN_ONLY"
    with stack.client(_token(stack, auditor)) as aud:
        assert aud.get("/api/v1/admin/users").status_code == 200
        assert aud.post(f"/api/v1/admin/users/{name}/disable").status_code == 403
    assert _audit(stack, "user.disabled", name) == []


def test_admin_page_disables_and_enables_a_user_in_chromium(stack: EdgeStack) -> None:
    """The admin page's Users table in a real browser (HTTPS, trusting the stack's web CA)."""
    from playwright.sync_api import sync_playwright

    from tests.acceptance.browser import ARTIFACTS, launch

    name = _user(stack, "acct_rad_page")
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            context = browser.new_context(ignore_https_errors=True,
                                          viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{stack.base_url}/admin/")
            page.get_by_label("Username").fill(stack.admin)
            page.get_by_label("Password").fill(stack.password)
            page.get_by_role("button", name="Log in").click()
            table = page.get_by_role("table", name="Users")
            row = table.get_by_role("row").filter(has_text=name)
            row.get_by_text("enabled").wait_for()
            page.get_by_role("button", name=f"Disable {name}").click()
            row.get_by_text("disabled").wait_for()
            assert page.get_by_role("status").filter(has_text=f"disable: {name}").count() == 1
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "admin-users.png"), full_page=True)
            page.get_by_role("button", name=f"Enable {name}").click()
            row.get_by_text("enabled").wait_for()
            assert errors == []
        finally:
            browser.close()
    assert _login(stack, name).status_code == 200
    assert [a[0] for a in _audit(stack, "user.disabled", name)] == [f"operator:{stack.admin}"]
