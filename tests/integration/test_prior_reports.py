"""Prior reports in the draft context: the text of every ORU^R01 is kept sealed with its
legacy report and the patient (PID-3); a draft of the patient's next study gets the earlier
reports, de-identified and date-shifted, as PRIOR-n; another patient's report never; a report
text that does not open is `llm_assist.failed` (cause prior_reports) and the draft goes on."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.messaging.subjects import Topology
from sidecar_core.secret_box import SecretBox
from sidecar_core.store.models import Facility, Finding, Study
from tests.fake_llm import FakeLlm
from tests.http_peers import serve
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop import drafts
from workflow_svc.report_loop.hl7 import intake
from workflow_svc.report_loop.legacy_reports import open_text, reseal_texts
from workflow_svc.report_loop.llm.context import CONTEXT_VERSION
from workflow_svc.report_loop.llm.deid import PROFILE, fold
from workflow_svc.report_loop.report_text import open_message

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("priortest", "PRIORTEST")
ADMIN = Caller(str(uuid.uuid4()), "dr_prior", "admin", all_facilities=True)
LOOPBACK = EgressPolicy.parse("127.0.0.1")
SENDER = "RIS_PRIOR"
PRIOR_TEXT = ("Comparison CT of Jane Doe (MRN123456) from 2022-11-02: 6 mm nodule right upper "
              "lobe, call 030 1234 5678.")


def oru(control_id: str, accession: str, pid3: str, observed: str, note: str) -> bytes:
    """An ORU^R01 final report as a RIS sends it: PID-3 with its assigning authority, the
    report text in two OBX lines."""
    return ("\r".join([
        f"MSH|^~\\&|RIS|{SENDER}|SIDECAR|SIDECAR|{observed}1130||ORU^R01^ORU_R01|{control_id}"
        "|P|2.5.1",
        f"PID|1||{pid3}||Doe^Jane",
        f"OBR|1||{accession}^RIS|71250^CT CHEST|||{observed}1015|||||||||||||"
        f"RPT-{accession}||{observed}1130|||F",
        f"OBX|1|TX|IMP^Impression||{note}||||||F",
        "OBX|2|TX|IMP^Impression||End of report.||||||F",
    ]) + "\r").encode()


@dataclass
class Env:
    db: Database
    study_id: uuid.UUID
    box: SecretBox

    async def rows(self, sql: str) -> list[dict]:
        async with self.db.read() as s:
            return [dict(r._mapping) for r in (await s.execute(text(sql))).all()]

    async def receive(self, message: bytes, box: SecretBox | None = None) -> None:
        _, verdict = await intake.receive(self.db, TOPOLOGY, message, "mllp", "127.0.0.1",
                                          box or self.box)
        assert verdict.code == "AA", verdict


@pytest.fixture()
async def env(database_url: str) -> AsyncIterator[Env]:
    db = Database(database_url)
    fid, sid = uuid.uuid4(), uuid.uuid4()
    async with db.unit_of_work() as s:
        s.add(Facility(id=fid, name="north", hl7_sending_facility=SENDER))
        await s.flush()
        s.add(Study(id=sid, facility_id=fid, accession="ACC-NEW", modality="CT",
                    description="CT CHEST", study_instance_uid="1.2.826.0.1.4242",
                    state="in_review", ingest_status="complete",
                    dicom_attributes={"PatientName": {"Alphabetic": "Doe^Jane"},
                                      "PatientID": "MRN123456", "IssuerOfPatientID": "HOSP",
                                      "StudyDate": "20240305", "PatientSex": "F",
                                      "StudyDescription": "CT CHEST"}))
        await s.flush()
        s.add(Finding(id=uuid.uuid4(), study_id=sid, model_name="chest_ct_nodules",
                      model_version="1", label="lung nodule", confidence=0.9, kind="box",
                      measurements={"diameter_mm": 7.0}, review_status="accepted",
                      review_current={}))
    try:
        yield Env(db, sid, SecretBox(os.urandom(32)))
    finally:
        await db.close()


async def _draft(env: Env, box: SecretBox) -> tuple[dict, object]:
    llm = FakeLlm()
    with serve(llm.app()) as port:
        async with env.db.unit_of_work() as s:
            await s.execute(text("update facilities set llm_base_url=:u, llm_model='m1'"),
                            {"u": f"http://127.0.0.1:{port}/v1"})
        made = await drafts.generate(env.db, TOPOLOGY, ADMIN, str(env.study_id), LOOPBACK, box)
    [sent] = llm.requests
    return sent, made


async def test_prior_report_reaches_the_llm_scrubbed_and_cited(env: Env) -> None:
    await env.receive(oru("P-1", "ACC-OLD", "MRN123456^^^HOSP^MR", "20230110", PRIOR_TEXT))
    # another patient, the same MRN of another assigning authority, and one too old
    await env.receive(oru("P-2", "ACC-OTHER", "MRN999^^^HOSP^MR", "20230601",
                          "OTHERPATIENT report"))
    await env.receive(oru("P-3", "ACC-ELSE", "MRN123456^^^ELSEWHERE^MR", "20230601",
                          "ELSEWHEREPATIENT report"))
    await env.receive(oru("P-4", "ACC-ANCIENT", "MRN123456^^^HOSP^MR", "20200101",
                          "ANCIENT report"))
    for message in await env.rows("select raw from hl7_messages"):  # the messages as received
        assert b"Doe" not in bytes(message["raw"]) and b"nodule" not in bytes(message["raw"])
    [stored] = await env.rows("select id, report_text_enc, patient_id, patient_id_issuer "
                              "from legacy_reports where accession = 'ACC-OLD'")
    assert (stored["patient_id"], stored["patient_id_issuer"]) == ("MRN123456", "HOSP")
    sealed = bytes(stored["report_text_enc"])
    assert b"nodule" not in sealed and b"Doe" not in sealed  # not plaintext at rest
    assert open_text(env.box, stored["id"], sealed) == PRIOR_TEXT + "\nEnd of report."

    sent, made = await _draft(env, env.box)
    assert not made.llm_failed, made.llm_error  # type: ignore[attr-defined]
    content = json.loads(sent["messages"][-1]["content"])
    assert content["context_version"] == CONTEXT_VERSION
    [prior] = content["prior_reports"]
    assert prior["ref"] == "PRIOR-1" and prior["accession"] == "[REMOVED]"
    assert "[PRIOR-1]" in sent["messages"][0]["content"]  # the model is told to cite it
    assert "6 mm nodule right upper lobe" in prior["text"]
    study_shift = content["study"]["date_shifted"]  # 2024-03-05, shifted
    assert "2023-03-06" <= study_shift < "2024-03-05"
    assert prior["date"] < study_shift and prior["date"] != "2023-01-10"
    folded = fold(json.dumps(sent, ensure_ascii=False))
    leaked = [w for w in ("Jane", "Doe", "MRN123456", "2022-11-02", "1234 5678", "ACC-OLD",
                          "OTHERPATIENT", "ELSEWHEREPATIENT", "ANCIENT", "2023-01-10")
              if fold(w) in folded]
    assert not leaked, leaked
    [trace] = await env.rows("select prompt, deid_profile, prompt_version from llm_traces")
    assert trace["prompt"]["context_version"] == CONTEXT_VERSION
    assert trace["deid_profile"] == PROFILE == trace["prompt"]["deid_profile"]
    assert trace["prompt"]["model"] == "m1" and trace["prompt"]["prior_refs"] == ["PRIOR-1"]
    [draft] = await env.rows("select context from drafts")
    assert draft["context"]["context_version"] == CONTEXT_VERSION


async def test_no_prior_is_normal(env: Env) -> None:
    sent, made = await _draft(env, env.box)
    assert not made.llm_failed  # type: ignore[attr-defined]
    assert json.loads(sent["messages"][-1]["content"])["prior_reports"] == []
    assert await env.rows("select 1 from audit_events where type = 'llm_assist.failed'") == []


async def test_a_text_that_does_not_open_is_a_partial_failure(env: Env) -> None:
    await env.receive(oru("P-5", "ACC-OLD", "MRN123456^^^HOSP^MR", "20230110", PRIOR_TEXT))
    stranger = SecretBox(os.urandom(32))  # not the key that sealed the text
    sent, made = await _draft(env, stranger)
    assert not made.llm_failed and made.draft.version == 1  # type: ignore[attr-defined]
    assert json.loads(sent["messages"][-1]["content"])["prior_reports"] == []
    [event] = await env.rows("select error_class, context from audit_events "
                             "where type = 'llm_assist.failed'")
    assert event["context"]["cause"] == "prior_reports"
    assert event["error_class"] == "PRIOR_REPORTS"
    [study] = await env.rows(f"select llm_status from studies where id = '{env.study_id}'")
    assert study["llm_status"] == "ready"


async def test_rotation_reseals_report_text(env: Env) -> None:
    old_key = os.urandom(32)
    old = SecretBox(old_key)
    await env.receive(oru("P-6", "ACC-OLD", "MRN123456^^^HOSP^MR", "20230110", PRIOR_TEXT),
                      old)
    new = SecretBox(os.urandom(32), previous=(old_key,))
    assert await reseal_texts(env.db, new) == 2  # the report text and the message as received
    [message] = await env.rows("select id, raw from hl7_messages")
    assert not new.needs_sealing(bytes(message["raw"]).decode())
    assert open_message(new, message["id"], message["raw"]).startswith(b"MSH|")
    [row] = await env.rows("select id, report_text_enc from legacy_reports")
    assert not new.needs_sealing(bytes(row["report_text_enc"]).decode())
    assert open_text(new, row["id"],
                     bytes(row["report_text_enc"])).startswith(PRIOR_TEXT)
    sent, made = await _draft(env, new)
    assert json.loads(sent["messages"][-1]["content"])["prior_reports"][0]["ref"] == "PRIOR-1"


async def test_the_facility_sets_the_look_back_and_the_maximum(env: Env) -> None:
    """Three earlier reports, 2 months, 14 months and 30 months before the study (2024-03-05):
    the default takes all three, newest first; a 400-day look-back the first; at most 2 the
    newest two; 0 none (and that is no failure)."""
    for n, day in enumerate(("20240105", "20230105", "20210905"), start=1):
        await env.receive(oru(f"LB-{n}", f"ACC-LB{n}", "MRN123456^^^HOSP^MR", day,
                              f"FINDING{n} stable."))

    async def sent_priors(**settings: int | None) -> list[str]:
        async with env.db.unit_of_work() as s:
            await s.execute(text("update facilities set prior_report_lookback_days = :d, "
                                 "prior_report_max = :m"),
                            {"d": settings.get("days"), "m": settings.get("most")})
        sent, made = await _draft(env, env.box)
        assert not made.llm_failed  # type: ignore[attr-defined]
        priors = json.loads(sent["messages"][-1]["content"])["prior_reports"]
        return [p["text"].split()[0] for p in priors]

    assert await sent_priors() == ["FINDING1", "FINDING2", "FINDING3"]
    assert await sent_priors(days=400) == ["FINDING1"]
    assert await sent_priors(most=2) == ["FINDING1", "FINDING2"]
    assert await sent_priors(days=400, most=0) == []
    assert await env.rows("select 1 from audit_events where type = 'llm_assist.failed'") == []


async def test_without_a_key_only_the_header_of_a_message_is_kept(env: Env) -> None:
    _, verdict = await intake.receive(env.db, TOPOLOGY, oru(
        "NK-1", "ACC-NK", "MRN123456^^^HOSP^MR", "20230110", PRIOR_TEXT), "mllp", "127.0.0.1",
        None)
    assert verdict.code == "AA"
    [message] = await env.rows("select raw from hl7_messages")
    assert bytes(message["raw"]) == oru("NK-1", "ACC-NK", "MRN123456^^^HOSP^MR", "20230110",
                                        PRIOR_TEXT).split(b"\r")[0]
    [report] = await env.rows("select report_text_enc from legacy_reports")
    assert report["report_text_enc"] is None
