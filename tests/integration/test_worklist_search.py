"""Worklist patient search (GET /api/v1/studies?q=): name in any PN group and component, case
and accents ignored; patient ID and accession; facility-scoped, bounded and audited
(real gateway, ReviewService over gRPC and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text, update

from sidecar_core.db import Database
from sidecar_core.store import models as m
from tests.integration.review_env import ReviewEnv, review_env

pytestmark = pytest.mark.integration


async def _ids(env: ReviewEnv, user: str, q: str) -> set[str]:
    reply = await env.http.get("/api/v1/studies", params={"q": q},
                               headers=await env.bearer(user))
    assert reply.status_code == 200, reply.text
    return {s["id"] for s in reply.json()["studies"]}


async def test_search_by_name_id_and_accession_within_the_callers_facilities(
        db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        a, b = str(env.seeded.study), str(env.seeded.study_b)
        async with db.unit_of_work() as s:  # fac-b's patient: accents, a double family name
            await s.execute(update(m.Study).where(m.Study.id == env.seeded.study_b).values(
                dicom_attributes={"PatientName": {"Alphabetic": "Müller-Lüdenscheidt^Jürgen"},
                                  "PatientID": "PID-B1"}))
        # Yamada^Tarou=山田^太郎=やまだ^たろう in fac-a: every group, any order, any case.
        for q in ("yamada", "Tarou YAMADA", "Yamada^Tarou", "tar", "山田", "山田太郎", "たろう",
                  "PID-A1", "pid-a", "ACC-1", "acc-1"):
            assert await _ids(env, "rad-a", q) == {a}, q
        for q in ("muller jurgen", "MÜLLER", "Lüdenscheidt", "ludenscheidt^jurgen", "pid-b1",
                  "ACC-B1"):
            assert await _ids(env, "admin", q) == {b}, q
        # Words start a name component; the referring physician is not the patient.
        for q in ("ller", "amada", "Sato", "Hanako", "%%", "__", "山本"):
            assert await _ids(env, "admin", q) == set(), q
        # Facility scope holds: fac-b's radiologist finds nothing of fac-a, and the reverse.
        assert await _ids(env, "rad-b", "yamada") == set()
        assert await _ids(env, "rad-a", "muller") == set()
        assert await _ids(env, "rad-b", "muller") == {b}


async def test_search_is_bounded_and_audited(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        headers = await env.bearer("rad-a")
        for q, status, reason in (("y" * 65, 400, "INVALID_REQUEST"),
                                  ("y", 400, "QUERY_TOO_SHORT"),
                                  ("ya\x07mada", 400, "INVALID_QUERY")):
            reply = await env.http.get("/api/v1/studies", params={"q": q}, headers=headers)
            assert reply.status_code == status, (q, reply.text)
            assert reply.json()["error"]["reason"] == reason
        reply = await env.http.get("/api/v1/studies", params={"q": "Yamada", "page_size": 1},
                                   headers=headers)
        assert reply.status_code == 200
        async with db.read() as s:
            rows = (await s.execute(text(
                "select actor, context from audit_events where type = 'worklist.queried'"))
            ).all()
        assert [(r.context["user"], r.context["patient_query"], r.context["study_ids"])
                for r in rows] == [("rad-a", "Yamada", [str(env.seeded.study)])]
        # A worklist without a patient search is not a query of that kind.
        await env.http.get("/api/v1/studies", headers=headers)
        async with db.read() as s:
            assert await s.scalar(text(
                "select count(*) from audit_events where type = 'worklist.queried'")) == 1
