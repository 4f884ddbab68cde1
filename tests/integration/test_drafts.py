"""Drafts from reviewed findings: template default, a real OpenAI-compatible server and its
faults, de-identification of the prompt, traces, versions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from protos.sidecar.workflow.v1 import report_service_pb2
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.errors import FailedPrecondition
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility, Finding, Instance, Series, Study
from tests.fake_llm import FakeLlm
from tests.http_peers import serve
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop import drafts
from workflow_svc.report_loop.llm.drafters import TEMPLATE_GENERATOR

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("drafttest", "DRAFTTEST")
ADMIN = Caller(str(uuid.uuid4()), "dr_admin", "admin", all_facilities=True)
# The fake LLM listens on loopback over http: listed, as an operator lists a local LLM.
LOOPBACK = EgressPolicy.parse("127.0.0.1")
PHI = ("Doe", "Jane", "MRN123456", "ACC-777", "2024-03-05", "20240305", "1.2.826.0.1.99")


@dataclass
class Seeded:
    db: Database
    study_id: uuid.UUID
    accepted: uuid.UUID
    edited: uuid.UUID
    rejected: uuid.UUID

    async def rows(self, sql: str) -> list[dict]:
        async with self.db.read() as s:
            return [dict(r._mapping) for r in (await s.execute(text(sql))).all()]

    async def state(self) -> str:
        return (await self.rows(f"select state from studies where id='{self.study_id}'")
                )[0]["state"]


@pytest.fixture()
async def seeded(database_url: str) -> AsyncIterator[Seeded]:
    db = Database(database_url)
    fid, sid, series = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(3)]
    async with db.unit_of_work() as s:
        s.add(Facility(id=fid, name="north"))
        await s.flush()
        s.add(Study(id=sid, facility_id=fid, accession="ACC-777", modality="CT",
                    description="CT CHEST for Jane Doe", study_instance_uid="1.2.826.0.1.99",
                    state="in_review", ingest_status="complete",
                    dicom_attributes={"PatientName": {"Alphabetic": "Doe^Jane"},
                                      "PatientID": "MRN123456", "StudyDate": "20240305",
                                      "PatientAge": "064Y", "PatientSex": "F",
                                      "BodyPartExamined": "CHEST",
                                      "StudyDescription": "CT CHEST for Jane Doe"}))
        await s.flush()
        s.add(Series(id=series, study_id=sid, series_instance_uid="1.2.826.0.1.99.1"))
        await s.flush()
        s.add(Instance(study_id=sid, series_id=series, sop_instance_uid="1.2.826.0.1.99.1.1",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.2", object_key="k", size_bytes=1,
                       attributes={"Modality": "CT"}))
        for fid_, status, current, label in (
                (ids[0], "accepted", {}, "lung nodule"),
                (ids[1], "edited", {"text": "Stable since 2024-03-05 per Dr Doe, MRN123456",
                                    "label": "ground-glass nodule"}, "nodule"),
                (ids[2], "rejected", {}, "artifact")):
            s.add(Finding(id=fid_, study_id=sid, model_name="chest_ct_nodules",
                          model_version="1", label=label, confidence=0.9, kind="box",
                          measurements={"diameter_mm": 6.5}, review_status=status,
                          review_current=current))
    try:
        yield Seeded(db, sid, *ids)
    finally:
        await db.close()


async def _generate(seeded: Seeded, egress: EgressPolicy = LOOPBACK
                    ) -> report_service_pb2.GenerateDraftResponse:
    return await drafts.generate(seeded.db, TOPOLOGY, ADMIN, str(seeded.study_id), egress)


async def _use_llm(seeded: Seeded, port: int, timeout_s: float = 5.0) -> None:
    async with seeded.db.unit_of_work() as s:
        await s.execute(text("update facilities set llm_base_url=:u, llm_model='test-model', "
                             "llm_timeout_s=:t"), {"u": f"http://127.0.0.1:{port}/v1",
                                                   "t": timeout_s})


async def test_template_drafter_by_default(seeded: Seeded) -> None:
    reply = await _generate(seeded)
    assert not reply.llm_failed
    draft = reply.draft
    assert draft.generator == TEMPLATE_GENERATOR and draft.assistive and draft.version == 1
    by_finding = {x.finding_ids[0]: x.text for x in draft.sentences if len(x.finding_ids) == 1}
    assert len(draft.sentences) == 2  # the rejected finding is left out
    assert set(by_finding) == {str(seeded.accepted), str(seeded.edited)}
    assert by_finding[str(seeded.edited)].startswith("Ground-glass nodule")  # their wording
    assert await seeded.state() == "draft_ready"
    [trace] = await seeded.rows("select * from llm_traces")
    assert trace["generator"] == TEMPLATE_GENERATOR and trace["draft_id"] == uuid.UUID(
        draft.draft_id)
    prompt = json.dumps(trace["prompt"])
    assert not [p for p in PHI if p in prompt], prompt
    content = json.loads(trace["prompt"]["messages"][1]["content"])
    assert content["patient"] == {"sex": "F", "age_years": "64"}
    assert content["study"]["description"] == "CT CHEST for [REMOVED] [REMOVED]"
    assert content["study"]["date_shifted"] < "2024-03-05"
    edited = next(f for f in content["findings"] if f["review"] == "edited")
    shifted = content["study"]["date_shifted"]  # free-text dates shift by the same days
    assert edited["radiologist_text"] == f"Stable since {shifted} per Dr [REMOVED], [REMOVED]"


async def test_llm_server_success_links_sentences(seeded: Seeded) -> None:
    llm = FakeLlm()
    with serve(llm.app()) as port:
        await _use_llm(seeded, port)
        reply = await _generate(seeded)
    assert not reply.llm_failed, reply.llm_error
    assert reply.draft.generator == "llm:test-model"
    assert sorted(tuple(x.finding_ids) for x in reply.draft.sentences) == sorted(
        [(str(seeded.accepted),), (str(seeded.edited),)])
    [sent] = llm.requests
    assert not [p for p in PHI if p in json.dumps(sent)]
    [trace] = await seeded.rows("select prompt, response, status from llm_traces")
    assert trace["status"] == "ok" and trace["prompt"]["messages"] == sent["messages"]
    assert json.loads(trace["response"])["sentences"][0]["findings"] == ["F1"]


@pytest.mark.parametrize(("mode", "error"), [
    ("slow", "APITimeoutError"), ("http500", "InternalServerError"),
    ("malformed", ""), ("unknown_ref", "InvalidDraftReply"),
])
async def test_llm_faults_fail_without_blocking(seeded: Seeded, mode: str, error: str) -> None:
    llm = FakeLlm(mode=mode, delay_s=3.0)
    with serve(llm.app()) as port:
        await _use_llm(seeded, port, timeout_s=1.0)
        reply = await _generate(seeded)
    assert reply.llm_failed and not reply.HasField("draft")
    assert error in reply.llm_error
    if mode == "unknown_ref":
        assert "F99" in reply.llm_error
    if mode == "http500":  # the server's error body is not kept: status and size only
        assert reply.llm_error.startswith("InternalServerError: HTTP 500 (")
        assert "model crashed" not in reply.llm_error
    assert await seeded.state() == "in_review"  # the review goes on
    [failed] = await seeded.rows("select * from audit_events where type='llm_assist.failed'")
    assert failed["error_message"] == reply.llm_error
    [trace] = await seeded.rows("select status, error, response from llm_traces")
    assert trace["status"] == "failed"
    if mode == "unknown_ref":
        assert "F99" in trace["response"]  # the exact reply is kept
    assert not await seeded.rows("select id from drafts")
    got = await drafts.get(seeded.db, ADMIN, str(seeded.study_id))
    assert not got.versions and got.llm_error == reply.llm_error


async def test_circuit_opens_after_repeated_failures(seeded: Seeded) -> None:
    llm = FakeLlm(mode="http500")
    with serve(llm.app()) as port:
        await _use_llm(seeded, port)
        for _ in range(3):
            assert (await _generate(seeded)
                    ).llm_failed
        calls = len(llm.requests)
        reply = await _generate(seeded)
    assert reply.llm_failed and "CircuitOpen" in reply.llm_error
    assert len(llm.requests) == calls  # failed fast: no request made


async def test_edit_and_accept_keep_versions(seeded: Seeded) -> None:
    first = (await _generate(seeded)).draft
    kept, links = first.sentences[0].text, list(first.sentences[0].finding_ids)
    edited = await drafts.edit(seeded.db, TOPOLOGY, ADMIN, str(seeded.study_id), 1,
                               f"{kept} Otherwise unremarkable.")
    assert edited.version == 2 and edited.status == "edited"
    assert list(edited.sentences[0].finding_ids) == links
    assert list(edited.sentences[1].finding_ids) == []
    with pytest.raises(FailedPrecondition) as stale:
        await drafts.accept(seeded.db, TOPOLOGY, ADMIN, str(seeded.study_id), 1)
    assert stale.value.reason == "VERSION_CONFLICT"
    accepted = await drafts.accept(seeded.db, TOPOLOGY, ADMIN, str(seeded.study_id), 2)
    assert accepted.status == "accepted" and accepted.assistive
    versions = (await drafts.get(seeded.db, ADMIN, str(seeded.study_id))).versions
    assert [(v.version, v.status) for v in versions] == [
        (1, "generated"), (2, "edited"), (3, "accepted")]


async def test_an_unlisted_loopback_llm_is_refused_at_call_time(seeded: Seeded) -> None:
    llm = FakeLlm()
    with serve(llm.app()) as port:
        await _use_llm(seeded, port)
        reply = await _generate(seeded, EgressPolicy())
    assert reply.llm_failed and reply.llm_error.startswith("EgressRefused: ")
    assert "loopback" in reply.llm_error and not llm.requests  # nothing was sent
    [refused] = await seeded.rows("select * from audit_events where "
                                  "type='security.egress_refused'")
    assert refused["error_class"] == "EGRESS_ADDRESS_REFUSED"
    assert refused["context"]["setting"] == "llm_base_url"
    assert await seeded.state() == "in_review"
