"""Table-driven: every review API endpoint × role × own or other facility (real gRPC and PG)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar_core.db import Database
from tests.integration.review_env import ReviewEnv, review_env

pytestmark = pytest.mark.integration

USERS = {"rad-a": "fac-a", "rad-b": "fac-b", "admin": None, "auditor": None}
Body = Callable[[ReviewEnv, str, dict[str, str]], Any]


async def _version(env: ReviewEnv, study: str, finding: str, headers: dict[str, str]) -> int:
    reply = await env.http.get(f"/api/v1/studies/{study}/findings", headers=headers)
    return int(next(f["version"] for f in reply.json()["findings"] if f["id"] == finding))


def _finding(env: ReviewEnv, study: str) -> str:
    return str(env.seeded.findings["nodule"] if study == str(env.seeded.study) else env.finding_b)


def _sop(env: ReviewEnv, study: str) -> tuple[str, str]:
    return (("1.2.3.1.1", env.sop_a) if study == str(env.seeded.study)
            else ("1.2.3.4.1", env.sop_b))


# (name, method, path after /api/v1/studies/{id}, body, kind); kinds decide the expected status.
ENDPOINTS: list[tuple[str, str, str, Body | None, str]] = [
    ("detail", "GET", "", None, "read"),
    ("findings", "GET", "/findings", None, "read"),
    ("audit", "GET", "/audit", None, "read"),
    ("history", "GET", "/findings/{finding}/history", None, "read"),
    ("open", "POST", "/open", None, "open"),
    ("access", "POST", "/access-events",
     lambda env, s, h: {"type": "finding_selected", "finding_id": _finding(env, s)}, "access"),
    ("claim", "POST", "/claim", None, "write"),
    ("release", "POST", "/release", None, "write"),
    ("decide", "POST", "/findings/{finding}/decisions", None, "write"),
    ("add_finding", "POST", "/findings",
     lambda env, s, h: {"label": "missed nodule", "bbox_px": [5, 5, 20, 20],
                        "series_instance_uid": _sop(env, s)[0],
                        "sop_instance_uid": _sop(env, s)[1]}, "create"),
    ("complete", "POST", "/complete", None, "write"),
]
OK = {"read": 200, "open": 200, "access": 204, "write": 200, "create": 201}


def expected(user: str, facility: str, kind: str) -> tuple[int, str]:
    if USERS[user] not in (None, facility):
        return 404, "STUDY_NOT_FOUND"
    if user == "auditor" and kind in ("write", "create"):
        return 403, "READ_ONLY_ROLE"
    return OK[kind], ""


async def test_every_endpoint_by_role_and_facility(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        studies = {"fac-a": str(env.seeded.study), "fac-b": str(env.seeded.study_b)}
        admin = await env.bearer("admin")
        outcomes: list[tuple[str, str, str, int, int]] = []
        for user in USERS:
            headers = await env.bearer(user)
            listed = (await env.http.get("/api/v1/studies", headers=headers)).json()["studies"]
            seen = {s["id"] for s in listed}
            for facility, study in studies.items():
                visible = USERS[user] in (None, facility)
                assert (study in seen) == visible, (user, facility)
                for name, method, tail, body_fn, kind in ENDPOINTS:
                    finding = _finding(env, study)
                    path = f"/api/v1/studies/{study}" + tail.format(finding=finding)
                    body = body_fn(env, study, headers) if body_fn else None
                    if name == "decide":
                        body = {"action": "accept",
                                "expected_version": await _version(env, study, finding, admin)}
                    reply = await env.http.request(method, path, json=body, headers=headers)
                    status, reason = expected(user, facility, kind)
                    outcomes.append((user, facility, name, status, reply.status_code))
                    if reply.status_code != status:
                        continue
                    if reason:
                        assert reply.json()["error"]["reason"] == reason, (user, name)
        wrong = [o for o in outcomes if o[3] != o[4]]
        assert not wrong, wrong
        assert len(outcomes) == len(USERS) * 2 * len(ENDPOINTS)


async def test_other_facility_is_indistinguishable_from_missing(db: Database,
                                                                tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        headers = await env.bearer("rad-b")
        for study in (env.seeded.study, uuid.uuid4()):
            for path in ("", "/findings", "/audit",
                         f"/assets/{env.seeded.assets['thumb']}"):
                reply = await env.http.get(f"/api/v1/studies/{study}{path}", headers=headers)
                assert reply.status_code == 404, path
                assert reply.json()["error"]["reason"] == "STUDY_NOT_FOUND"
        # Filters cannot reach another facility either.
        listed = await env.http.get("/api/v1/studies?facility=fac-a", headers=headers)
        assert listed.status_code == 200 and listed.json()["studies"] == []
