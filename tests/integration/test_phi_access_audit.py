"""The PHI access audit on a real gateway, ReviewService and PostgreSQL: one `phi.*` event per
request that returned patient data or was refused, written by the server, with who (from the
verified token), role, session id, client address, what, study and patient reference."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import text

from sidecar_core.db import Database
from tests.integration.review_env import review_env

pytestmark = pytest.mark.integration


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
