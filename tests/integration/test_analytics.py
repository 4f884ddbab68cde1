"""Review analytics equal the figures of a known set of review events, findings, state
transitions and audit events, stored in a real PostgreSQL migrated by Alembic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sidecar_core.store.models import (
    AiRun,
    AuditEvent,
    Facility,
    Finding,
    ReviewEvent,
    StateTransition,
    Study,
)
from workflow_svc.operations.analytics import review_analytics

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def _study(s: Any, facility: Facility, modality: str, created: float,
                 states: list[tuple[str, float]]) -> Study:
    study = Study(id=uuid.uuid4(), facility_id=facility.id, accession=uuid.uuid4().hex[:12],
                  study_instance_uid=f"1.2.3.{uuid.uuid4().int % 10**12}", modality=modality,
                  created_at=_at(created), state=states[-1][0] if states else None,
                  eligible=True)
    s.add(study)
    await s.flush()
    previous = None
    for state, at in states:
        s.add(StateTransition(study_id=study.id, from_state=previous, to_state=state,
                              actor="test", at=_at(at)))
        previous = state
    return study


def _finding(s: Any, study: Study, run: AiRun | None, label: str, *, origin: str = "ai",
             version: str = "1.0", visible: bool = True, confidence: float = 0.8) -> Finding:
    finding = Finding(id=uuid.uuid4(), ai_run_id=run.id if run else None, study_id=study.id,
                      model_name=run.model_name if run else "", model_version=version
                      if run else "", label=label, confidence=confidence, kind="box",
                      origin=origin, visible=visible)
    s.add(finding)
    return finding


def _decide(s: Any, finding: Finding, *actions: str) -> None:
    for i, action in enumerate(actions):
        s.add(ReviewEvent(study_id=finding.study_id, finding_id=finding.id,
                          ai_run_id=finding.ai_run_id, action=action, version=i + 1,
                          model_name=finding.model_name, model_version=finding.model_version,
                          at=_at(1000 + i)))


async def test_figures_of_a_known_set_of_review_events(db: Any) -> None:
    async with db.unit_of_work() as s:
        north = Facility(id=uuid.uuid4(), name="north")
        shadow = Facility(id=uuid.uuid4(), name="shadowed", shadow_mode=True)
        s.add_all([north, shadow])
        await s.flush()
        ct = await _study(s, north, "CT", 0, [("received", 10), ("processed", 20),
                                        ("ai_complete", 50), ("ready_for_review", 51),
                                        ("assigned", 111), ("in_review", 120),
                                        ("legacy_report_completed", 651)])
        mr = await _study(s, north, "MR", 0, [("received", 30), ("processed", 40),
                                        ("ai_complete", 60), ("ready_for_review", 61)])
        hidden = await _study(s, shadow, "CT", 0, [("received", 5), ("processed", 6),
                                             ("ai_complete", 7), ("ready_for_review", 8)])
        empty = await _study(s, shadow, "CT", 0, [("received", 5)])
        await s.flush()
        ct_run = AiRun(id=uuid.uuid4(), study_id=ct.id, model_name="chest_ct_nodules",
                       status="completed")
        mr_run = AiRun(id=uuid.uuid4(), study_id=mr.id, model_name="brain_mr_lesions",
                       status="completed")
        sh_run = AiRun(id=uuid.uuid4(), study_id=hidden.id, model_name="chest_ct_nodules",
                       status="completed")
        s.add_all([ct_run, mr_run, sh_run])
        await s.flush()
        accepted = _finding(s, ct, ct_run, "nodule")
        edited = _finding(s, ct, ct_run, "nodule")
        rejected = _finding(s, ct, ct_run, "nodule")
        undecided = _finding(s, ct, ct_run, "nodule")
        ignored = _finding(s, mr, mr_run, "lesion")
        reaccepted = _finding(s, mr, mr_run, "lesion")
        own = _finding(s, ct, None, "mass", origin="radiologist")
        _finding(s, hidden, sh_run, "nodule", visible=False, confidence=0.6)
        _finding(s, hidden, sh_run, "nodule", visible=False, confidence=0.9)
        await s.flush()
        _decide(s, accepted, "include_in_draft", "accept")
        _decide(s, edited, "edit_geometry", "accept")
        _decide(s, rejected, "accept", "reject")
        _decide(s, ignored, "ignore")
        _decide(s, reaccepted, "reject", "accept")
        _decide(s, own, "accept")  # a radiologist's own finding is not an AI outcome
        assert undecided.id and empty.id
        s.add(AuditEvent(type="review.completed", actor="user:rad", study_id=ct.id,
                         at=_at(420)))

    found = await review_analytics(db)
    rates = {(r.dimension, r.value): (r.reviewed, r.counts) for r in found.rates}
    assert rates[("model", "chest_ct_nodules 1.0")] == (
        3, {"accepted": 1, "edited": 1, "rejected": 1, "ignored": 0})
    assert rates[("model", "brain_mr_lesions 1.0")] == (
        2, {"accepted": 1, "edited": 0, "rejected": 0, "ignored": 1})
    assert rates[("modality", "CT")][0] == 3 and rates[("modality", "MR")][0] == 2
    assert rates[("facility", "north")] == (
        5, {"accepted": 2, "edited": 1, "rejected": 1, "ignored": 1})
    assert rates[("label", "lesion")][0] == 2 and rates[("label", "nodule")][0] == 3
    assert ("label", "mass") not in rates
    assert found.added == [{"facility": "north", "modality": "CT", "label": "mass", "count": 1}]
    stages = {t["stage"]: t for t in found.turnaround}
    assert stages["ingest"]["studies"] == 4
    assert stages["ingest"]["p50_s"] == pytest.approx(7.5)  # 5, 5, 10, 30
    assert stages["inference"]["studies"] == 3
    assert stages["inference"]["mean_s"] == pytest.approx((30 + 20 + 1) / 3)
    assert (stages["assignment"]["studies"], stages["assignment"]["p50_s"]) == (1, 60)
    assert (stages["review"]["studies"], stages["review"]["p50_s"]) == (1, 300)
    assert (stages["legacy_report"]["studies"], stages["legacy_report"]["p50_s"]) == (1, 600)
    assert found.shadow == [{"facility": "shadowed", "studies": 2,
                             "studies_with_findings": 1, "findings": 2,
                             "mean_confidence": pytest.approx(0.75), "studies_reported": 0}]

    only_shadow = await review_analytics(db, facility="shadowed")
    assert only_shadow.rates == [] and only_shadow.added == []
    later = await review_analytics(db, since=T0 + timedelta(days=1))
    assert later.rates == [] and all(t["studies"] == 0 for t in later.turnaround)
