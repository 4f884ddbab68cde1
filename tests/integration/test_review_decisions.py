"""Per-finding decisions: versions and 409s, history, own findings, claims, worklist filters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from protos.sidecar.events.v1 import review_events_pb2
from sidecar_core.db import Database
from sidecar_core.store import models as m
from tests.integration.review_env import TOPOLOGY, ReviewEnv, review_env
from tests.integration.test_workflow_queries import PASSWORD
from workflow_svc.identity import users

pytestmark = pytest.mark.integration


async def _decide(env: ReviewEnv, headers: dict[str, str], fid: str, **body: Any) -> Any:
    return await env.http.post(f"/api/v1/studies/{env.seeded.study}/findings/{fid}/decisions",
                               json=body, headers=headers)


async def _audit_types(db: Database) -> list[str]:
    async with db.read() as s:
        return list((await s.scalars(select(m.AuditEvent.type).where(
            m.AuditEvent.type.like("review.%")).order_by(m.AuditEvent.seq))).all())


async def test_decisions_supersede_keep_history_and_conflict_on_stale_versions(
        db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        rad = await env.bearer("rad-a")
        fid = str(env.seeded.findings["nodule"])
        first = await _decide(env, rad, fid, action="accept", expected_version=0)
        assert first.status_code == 200, first.text
        body = first.json()
        assert (body["version"], body["review_status"]) == (1, "accepted")
        assert body["decision"]["action"] == "accept" and body["decision"]["by"] == "rad-a"
        stale = await _decide(env, rad, fid, action="reject", reason="artifact",
                              expected_version=0)
        assert stale.status_code == 409
        assert stale.json()["error"]["reason"] == "VERSION_CONFLICT"
        assert stale.json()["current"]["version"] == 1
        missing = await _decide(env, rad, fid, action="reject", expected_version=1)
        assert missing.status_code == 400
        assert missing.json()["error"]["reason"] == "REASON_REQUIRED"
        rejected = (await _decide(env, rad, fid, action="reject", reason="false_positive",
                                  note="vessel", expected_version=1)).json()
        assert rejected["decision"] == {**rejected["decision"], "action": "reject",
                                        "reason": "false_positive", "note": "vessel"}
        moved = (await _decide(env, rad, fid, action="edit_geometry",
                               bbox_px=[12, 22, 34, 44], expected_version=2)).json()
        assert moved["current"]["bbox_px"] == [12, 22, 34, 44]
        assert moved["bbox_px"] == [10, 20, 30, 40]  # the AI's box stays
        bad_box = await _decide(env, rad, fid, action="edit_geometry", bbox_px=[5, 5, 1, 1],
                                expected_version=3)
        assert bad_box.json()["error"]["reason"] == "INVALID_BBOX"
        relabelled = (await _decide(env, rad, fid, action="relabel", label="granuloma",
                                    expected_version=3)).json()
        texted = (await _decide(env, rad, fid, action="edit_text", text="calcified",
                                expected_version=4)).json()
        drafted = (await _decide(env, rad, fid, action="include_in_draft",
                                 expected_version=5)).json()
        ignored = (await _decide(env, rad, fid, action="ignore", expected_version=6)).json()
        assert relabelled["current"]["label"] == "granuloma" and relabelled["label"] == "nodule"
        assert texted["current"]["text"] == "calcified"
        assert drafted["current"]["include_in_draft"] is True
        assert drafted["decision"]["action"] == "edit_text"  # the draft flag is no verdict
        assert (ignored["version"], ignored["review_status"]) == (7, "ignored")
        history = (await env.http.get(f"/api/v1/studies/{env.seeded.study}/findings/{fid}"
                                      "/history", headers=rad)).json()["events"]
        assert [(e["action"], e["version"]) for e in history] == [
            ("accept", 1), ("reject", 2), ("edit_geometry", 3), ("relabel", 4),
            ("edit_text", 5), ("include_in_draft", 6), ("ignore", 7)]
        assert history[1]["reason"] == "false_positive" and history[2]["bbox_px"] == [12, 22,
                                                                                      34, 44]
        assert (await _audit_types(db)) == [
            "review.finding_accepted", "review.finding_rejected", "review.finding_edited",
            "review.finding_relabelled", "review.finding_edited",
            "review.finding_included_in_draft", "review.finding_ignored"]
        async with db.read() as s:
            events = (await s.scalars(select(m.ReviewEvent).order_by(m.ReviewEvent.version))
                      ).all()
            outbox = (await s.scalars(select(m.OutboxMessage).where(
                m.OutboxMessage.subject == f"{TOPOLOGY.prefix}.review.v1.changed"))).all()
        assert [(e.model_name, e.model_version, str(e.finding_id)) for e in events] == [
            ("chest-ct-nodules", "1.0", fid)] * 7
        assert all(e.ai_run_id is not None for e in events)
        changed = [review_events_pb2.ReviewChanged.FromString(o.payload) for o in outbox]
        assert [c.action for c in changed] == ["accepted", "rejected", "edited", "relabelled",
                                               "edited", "edited", "ignored"]
        assert {(c.study_id, tuple(c.finding_ids)) for c in changed} == {
            (str(env.seeded.study), (fid,))}
        assert [c.review_event_id for c in changed] == [str(e.id) for e in events]
        assert all(list(c.ai_run_ids) == [str(events[0].ai_run_id)] for c in changed)
        assert sorted(o.msg_id for o in outbox) == sorted(str(e.id) for e in events)


async def test_two_radiologists_at_once_one_wins_one_gets_409(db: Database,
                                                              tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        await users.add_user(db, "rad-a2", PASSWORD, "radiologist", "fac-a")
        one, two = await env.bearer("rad-a"), await env.bearer("rad-a2")
        fid = str(env.seeded.findings["nodule"])
        replies = await asyncio.gather(
            _decide(env, one, fid, action="accept", expected_version=0),
            _decide(env, two, fid, action="reject", reason="artifact", expected_version=0))
        assert sorted(r.status_code for r in replies) == [200, 409]
        loser = next(r for r in replies if r.status_code == 409).json()
        winner = next(r for r in replies if r.status_code == 200).json()
        assert loser["current"]["version"] == 1
        assert loser["current"]["decision"] == winner["decision"]
        async with db.read() as s:
            assert len((await s.scalars(select(m.ReviewEvent))).all()) == 1


async def test_own_finding_claims_open_complete_and_access_events(db: Database,
                                                                 tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        await users.add_user(db, "rad-a2", PASSWORD, "radiologist", "fac-a")
        rad, other = await env.bearer("rad-a"), await env.bearer("rad-a2")
        study = f"/api/v1/studies/{env.seeded.study}"
        claimed = await env.http.post(f"{study}/claim", headers=rad)
        assert claimed.json()["state"] == "assigned" and claimed.json()["assigned_to"] == "rad-a"
        taken = await env.http.post(f"{study}/claim", headers=other)
        assert taken.status_code == 409 and taken.json()["error"]["reason"] == "STUDY_CLAIMED"
        assert (await env.http.post(f"{study}/release", headers=other)).status_code == 409
        mine = await env.http.get("/api/v1/studies?assigned=me", headers=rad)
        assert [s["id"] for s in mine.json()["studies"]] == [str(env.seeded.study)]
        opened = await env.http.post(f"{study}/open", headers=rad)
        assert opened.json()["state"] == "in_review"
        added = await env.http.post(f"{study}/findings", headers=rad, json={
            "label": "missed nodule", "bbox_px": [1, 2, 11, 12], "text": "RUL",
            "series_instance_uid": "1.2.3.1.1", "sop_instance_uid": env.sop_a, "frame": 1})
        assert added.status_code == 201, added.text
        own = added.json()
        assert (own["origin"], own["version"], own["confidence"], own["ai_run_id"]) == (
            "radiologist", 1, None, None)
        assert own["current"] == {"label": "missed nodule", "bbox_px": [1, 2, 11, 12],
                                  "text": "RUL", "include_in_draft": True}
        nowhere = await env.http.post(f"{study}/findings", headers=rad, json={
            "label": "x", "bbox_px": [1, 2, 3, 4], "series_instance_uid": "1.2.3.4.1",
            "sop_instance_uid": env.sop_b})  # an instance of another facility's study
        assert nowhere.status_code == 400
        assert nowhere.json()["error"]["reason"] == "UNKNOWN_INSTANCE"
        listed = (await env.http.get(f"{study}/findings", headers=rad)).json()["findings"]
        assert [f["origin"] for f in listed] == ["ai", "ai", "radiologist"]
        for event in ({"type": "overlay_toggled", "visible": False},
                      {"type": "finding_selected", "finding_id": own["id"]}):
            assert (await env.http.post(f"{study}/access-events", json=event,
                                        headers=rad)).status_code == 204
        bad = await env.http.post(f"{study}/access-events", json={"type": "scrolled"},
                                  headers=rad)
        assert bad.status_code == 422
        done = await env.http.post(f"{study}/complete", headers=rad)
        assert done.status_code == 200
        assert (await _audit_types(db)) == [
            "review.study_claimed", "review.study_opened", "review.finding_added",
            "review.overlay_toggled", "review.finding_selected", "review.completed"]
        async with db.read() as s:
            toggled = await s.scalar(select(m.AuditEvent.context).where(
                m.AuditEvent.type == "review.overlay_toggled"))
        assert toggled is not None and toggled.pop("session_id")  # the session it came in
        assert toggled == {"user": "rad-a", "visible": False, "role": "radiologist"}


async def test_worklist_rows_filters_sort_and_paging(db: Database, tmp_path: Path) -> None:
    async with review_env(db, tmp_path) as env:
        admin = await env.bearer("admin")

        async def ids(query: str) -> list[str]:
            reply = await env.http.get(f"/api/v1/studies?{query}", headers=admin)
            assert reply.status_code == 200, reply.text
            return [s["accession"] for s in reply.json()["studies"]]

        rows = (await env.http.get("/api/v1/studies?accession=ACC-1",
                                   headers=admin)).json()["studies"]
        row = rows[0]
        assert row["patient"] == {"name": "Yamada^Tarou", "name_ideographic": "山田^太郎",
                                  "name_phonetic": "やまだ^たろう", "id": "PID-A1", "sex": "M",
                                  "birth_date": "1979-02-14", "age": "045Y"}
        assert (row["study_date"], row["referring_physician"], row["body_part"]) == (
            "2024-03-05", "Sato^Hanako", "CHEST")
        assert (row["ai_status"], row["finding_count"], row["max_confidence"]) == (
            "findings", 2, 0.9)  # the shadow-mode finding does not count
        assert await ids("ai_status=findings") == ["ACC-1"]
        # No AI result yet (ACC-B1 has a finding but its run is not complete): pending.
        assert await ids("ai_status=pending") == ["ACC-B1", "ACC-3", "ACC-2"]
        assert await ids("date_from=2024-03-06") == ["ACC-B1"]
        assert await ids("date_to=2024-03-05") == ["ACC-1"]
        by_confidence = await ids("sort=-max_confidence")  # studies without findings last
        assert by_confidence[:2] == ["ACC-1", "ACC-B1"]
        assert set(by_confidence[2:]) == {"ACC-3", "ACC-2"}
        assert await ids("sort=received_at") == ["ACC-1", "ACC-2", "ACC-3", "ACC-B1"]
        assert await ids("state=ready_for_review&modality=CT") == ["ACC-B1", "ACC-1"]
        assert await ids("eligible=false") == ["ACC-2"]
        walked, token = [], ""
        while True:
            reply = (await env.http.get(f"/api/v1/studies?page_size=1&sort=study_date"
                                        f"&page_token={token}", headers=admin)).json()
            walked += [s["accession"] for s in reply["studies"]]
            token = reply["next_page_token"]
            if not token:
                break
        assert walked[:2] == ["ACC-1", "ACC-B1"] and set(walked[2:]) == {"ACC-3", "ACC-2"}
        for query, reason in [("ai_status=maybe", "INVALID_AI_STATUS"),
                              ("date_from=05/03/2024", "INVALID_DATE"),
                              ("sort=name", "INVALID_SORT"),
                              ("page_token=garbage", "INVALID_PAGE_TOKEN")]:
            reply = await env.http.get(f"/api/v1/studies?{query}", headers=admin)
            assert reply.status_code == 400 and reply.json()["error"]["reason"] == reason
        script = (await env.http.get("/api/v1/studies?accession=ACC-B1",
                                     headers=admin)).json()["studies"][0]
        assert script["patient"]["name"] == "<img src=x onerror=alert(1)>"  # data, as given
