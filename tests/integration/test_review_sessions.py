"""Sessions: cookie + CSRF, bearer, logout revocation, key rotation, rate limits, rehash, CSP."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from review_gateway.app import create_app
from review_gateway.auth import tokens
from sidecar_core.db import Database
from sidecar_core.store import models as m
from tests.integration.review_env import SECRET, review_env
from tests.integration.test_workflow_queries import PASSWORD
from workflow_svc.identity.passwords import scrypt_hash
from workflow_svc.identity.sessions import LoginLimits

pytestmark = pytest.mark.integration


def _cookies(reply: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in reply.headers.get_list("set-cookie")}


async def test_cookie_session_needs_csrf_on_writes_bearer_does_not(db: Database,
                                                                    tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        login = await env.http.post("/api/v1/auth/login",
                                    json={"username": "rad-a", "password": PASSWORD})
        body = login.json()
        assert (body["username"], body["role"], body["facilities"]) == ("rad-a", "radiologist",
                                                                        ["fac-a"])
        cookies = _cookies(login)
        session = cookies["sidecar_session"].lower()
        assert "httponly" in session and "samesite=strict" in session and "path=/" in session
        assert "secure" not in session  # plain http here
        assert "httponly" not in cookies["sidecar_csrf"].lower()
        assert env.http.cookies["sidecar_csrf"] == body["csrf_token"]
        study = f"/api/v1/studies/{env.seeded.study}"
        me = await env.http.get("/api/v1/me")  # the cookie alone reads
        assert me.status_code == 200 and me.json()["username"] == "rad-a"
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            denied = await env.http.post(f"{study}/claim", headers=headers)
            assert denied.status_code == 403
            assert denied.json()["error"]["reason"] == "CSRF_FAILED"
        assert (await env.http.get(study)).json()["assigned_to"] is None  # nothing changed
        ok = await env.http.post(f"{study}/claim", headers={"X-CSRF-Token": body["csrf_token"]})
        assert ok.status_code == 200 and ok.json()["assigned_to"] == "rad-a"
        env.http.cookies.clear()
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert (await env.http.post(f"{study}/release", headers=bearer)).status_code == 200
        assert (await env.http.get("/api/v1/me")).status_code == 401


async def test_secure_cookie_behind_tls(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=env.app),
                                     base_url="https://gateway") as https:
            reply = await https.post("/api/v1/auth/login",
                                     json={"username": "rad-a", "password": PASSWORD})
        assert "secure" in _cookies(reply)["sidecar_session"].lower()


async def test_logout_revokes_the_token_everywhere(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        login = await env.login("rad-a")
        bearer = {"Authorization": f"Bearer {login['access_token']}"}
        assert (await env.http.get("/api/v1/me", headers=bearer)).status_code == 200
        out = await env.http.post("/api/v1/auth/logout",
                                  headers={"X-CSRF-Token": login["csrf_token"]})
        assert out.status_code == 204
        assert "sidecar_session" not in env.http.cookies
        again = await env.http.get("/api/v1/me", headers=bearer)
        assert again.status_code == 401 and again.json()["error"]["reason"] == "TOKEN_REVOKED"
        # A second gateway (no local memory of the logout) asks the store and refuses it too.
        other = create_app(env.settings)
        async with other.router.lifespan_context(other), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other), base_url="http://gw2") as http:
            reply = await http.get("/api/v1/me", headers=bearer)
            assert reply.status_code == 401 and reply.json()["error"]["reason"] == "TOKEN_REVOKED"
            fresh = await env.bearer("rad-a")
            assert (await http.get("/api/v1/me", headers=fresh)).status_code == 200
        async with db.read() as s:
            events = (await s.scalars(select(m.AuditEvent.type).where(
                m.AuditEvent.type == "auth.logout"))).all()
        assert events == ["auth.logout"]


async def test_key_rotation_and_forged_tokens(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        old_key = b"old-secret-" + b"z" * 40
        user = (await env.login("rad-a"))
        claims = jwt.decode(user["access_token"], options={"verify_signature": False})
        old = tokens.issue(old_key, user_id=claims["sub"], username="rad-a", role="radiologist",
                         facilities=["fac-a"], ttl_s=60)
        reply = await env.http.get("/api/v1/me", headers={"Authorization": f"Bearer {old}"})
        assert reply.json()["error"]["reason"] == "INVALID_TOKEN"  # unknown key id
        rotated = env.settings.model_copy(update={"token_previous_secrets": [old_key.decode()]})
        app = create_app(rotated)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            assert (await http.get("/api/v1/me",
                                   headers={"Authorization": f"Bearer {old}"})).status_code == 200
        header = jwt.get_unverified_header(user["access_token"])
        assert header["kid"] == tokens.key_id(SECRET.encode()) and header["alg"] == "HS256"
        forged_claims = {**claims, "role": "admin", "fac": []}
        unsigned = jwt.encode(forged_claims, "", algorithm="none", headers={"kid": header["kid"]})
        resigned = jwt.encode(forged_claims, "guess" * 10, algorithm="HS256",
                              headers={"kid": header["kid"]})
        body = user["access_token"].split(".")[1]
        tampered = json.loads(base64.urlsafe_b64decode(body + "=="))
        assert tampered["role"] == "radiologist"
        for token in (unsigned, resigned, "a.b.c", "not-a-token"):
            reply = await env.http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 401, token


async def test_failed_logins_back_off_per_user_and_per_address_and_are_audited(
        db: Database, tmp_path: Path) -> None:
    limits = LoginLimits(window_s=300, per_user=3, per_address=5, backoff_s=1.0,
                         backoff_max_s=4.0)
    async with review_env(db, tmp_path, limits=limits) as env:
        async def attempt(username: str, password: str) -> httpx.Response:
            return await env.http.post("/api/v1/auth/login",
                                       json={"username": username, "password": password})

        for _ in range(3):
            assert (await attempt("rad-a", "wrong password")).status_code == 401
        early = await attempt("rad-a", PASSWORD)  # too early, even with the right password
        assert early.status_code == 429 and early.headers["Retry-After"] == "1"
        assert early.json()["error"]["reason"] == "LOGIN_RATE_LIMITED"
        assert (await attempt("rad-b", PASSWORD)).status_code == 200  # another user is fine
        await asyncio.sleep(1.1)
        # Not a lock-out: once the back-off has passed, the right password logs in.
        assert (await attempt("rad-a", PASSWORD)).status_code == 200
        for _ in range(2):
            assert (await attempt("nobody", "x")).status_code == 401
        # Five failures from this address (3 + 2): every user waits a second from it, then
        # its next failure doubles the wait.
        assert (await attempt("auditor", PASSWORD)).status_code == 429
        await asyncio.sleep(1.1)
        assert (await attempt("nobody", "x")).status_code == 401
        slowed = await attempt("auditor", PASSWORD)
        assert slowed.status_code == 429 and slowed.headers["Retry-After"] == "2"
        # Another address is not slowed by this one's failures.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(
                app=env.app, client=("10.9.8.7", 40000)), base_url="http://gateway") as other:
            elsewhere = await other.post("/api/v1/auth/login",
                                         json={"username": "auditor", "password": PASSWORD})
        assert elsewhere.status_code == 200, elsewhere.text
        async with db.read() as s:
            failed = (await s.scalars(select(m.AuditEvent).where(
                m.AuditEvent.type == "auth.login_failed"))).all()
            limited = (await s.scalars(select(m.AuditEvent).where(
                m.AuditEvent.type == "auth.login_rate_limited"))).all()
        assert len(failed) == 6
        for event in failed:
            assert set(event.context) == {"username", "address", "reason"}
            assert "wrong password" not in json.dumps(event.context)
        assert {e.context["username"] for e in failed} == {"rad-a", "nobody"}
        assert {(e.context["username"], e.context["limit"]) for e in limited} == {
            ("rad-a", "user"), ("auditor", "address")}


async def test_scrypt_hash_is_rehashed_with_argon2id_at_login(db: Database,
                                                              tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        legacy = await asyncio.to_thread(scrypt_hash, PASSWORD)
        async with db.unit_of_work() as s:
            await s.execute(update(m.User).where(m.User.username == "rad-a")
                            .values(password_hash=legacy))
        assert (await env.login("rad-a"))["role"] == "radiologist"
        async with db.read() as s:
            stored = await s.scalar(select(m.User.password_hash)
                                    .where(m.User.username == "rad-a"))
        assert stored is not None and stored.startswith("$argon2id$")
        assert (await env.login("rad-a"))["role"] == "radiologist"


async def test_html_has_a_strict_csp(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        page = await env.http.get("/")
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["Referrer-Policy"] == "no-referrer"


