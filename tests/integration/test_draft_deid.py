"""The LLM draft context from what ingest stores, through the real Ingest RPC: patient
characteristics and the request arrive at an OpenAI-compatible server; names (every PN group,
any character set), IDs, the accession, phone numbers, e-mail addresses and dates do not."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import text

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import User
from tests.fake_llm import FakeLlm
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.http_peers import serve
from tests.integration.test_study_attributes import ingest  # noqa: F401  (the ingest service)
from workflow_svc.identity.access import Caller
from workflow_svc.report_loop import drafts
from workflow_svc.report_loop.llm.deid import PROFILE, fold
from workflow_svc.review import decisions

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("deidtest", "DEIDTEST")
ADMIN = Caller(str(uuid.uuid4()), "dr_deid", "admin", all_facilities=True)
LOOPBACK = EgressPolicy.parse("127.0.0.1")

# (SpecificCharacterSet, PatientName, the name's words as a radiologist would type them)
PATIENTS = [
    ("ISO_IR 100", "Müller-Lüdenscheidt^Jürgen", ["MÜLLER-Lüdenscheidt", "Jurgen"],
     ["Müller", "Lüdenscheidt", "Jürgen"]),
    ("ISO_IR 192", "Yamada^Tarou=山田^太郎=やまだ^たろう", ["Yamada", "山田太郎", "TAROU"],
     ["Yamada", "Tarou", "山田", "太郎", "やまだ", "たろう"]),
]
PATIENT_ID, OTHER_ID, ACCESSION = "PID-4711", "OLDMRN-88", "ACC-90210"
PHONE, EMAIL, REFERRER = "+49 30 1234 5678", "family.contact@example.org", "Okafor^Chiamaka"


def _study(charset: str, name: str, words: list[str], uid: str) -> list[bytes]:
    said = " ".join(words)
    out = []
    for z in (0.0, 1.0):
        ds = ct_slice(uid, accession=ACCESSION, z=z)
        ds.SpecificCharacterSet = charset
        ds.PatientName, ds.PatientID, ds.OtherPatientIDs = name, PATIENT_ID, OTHER_ID
        ds.PatientSex, ds.PatientAge, ds.PatientBirthDate = "F", "064Y", "19600101"
        ds.StudyDate, ds.ReferringPhysicianName = "20240305", REFERRER
        ds.StudyDescription = f"CT CHEST follow-up {said} {PATIENT_ID} 2024-03-05"
        request = Dataset()
        request.ReasonForTheRequestedProcedure = (
            f"Cough, smoker. Call {PHONE} or {EMAIL}; Dr Okafor")
        ds.RequestAttributesSequence = [request]
        out.append(to_bytes(ds))
    return out


def _strings(value: Any) -> list[str]:
    """Every string in a decoded JSON value (so that escapes cannot hide a name)."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return [value]
        return [value, *_strings(decoded)] if not isinstance(decoded, str) else [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize(("charset", "name", "words", "parts"), PATIENTS,
                         ids=["latin1-accents", "utf8-ideographic-phonetic"])
async def test_no_identifier_reaches_the_llm_server(
        ingest, database_url: str, charset: str, name: str, words: list[str],  # noqa: F811
        parts: list[str]) -> None:  # type: ignore[no-untyped-def]
    add_facility(database_url, "deid", quiet_period_s=30)
    uid = f"1.2.826.0.1.3680043.8.498.{uuid.uuid4().int % 10**12}"
    reply = await ingest.IngestInstances(pb.IngestInstancesRequest(
        facility="deid", items=[pb.IngestInstancesRequestItem(dicom=d)
                                for d in _study(charset, name, words, uid)]))
    assert [r.outcome for r in reply.results] == [pb.INSTANCE_OUTCOME_STORED] * 2
    with psycopg.connect(database_url) as conn:
        study_id, series, sop = conn.execute(
            "select s.id, se.series_instance_uid, i.sop_instance_uid from studies s "
            "join series se on se.study_id = s.id join instances i on i.series_id = se.id "
            "where s.study_instance_uid = %s limit 1", (uid,)).fetchone()  # type: ignore[misc]
    db = Database(database_url)
    try:
        async with db.unit_of_work() as s:
            s.add(User(id=uuid.UUID(ADMIN.user_id), username=ADMIN.username,
                       password_hash="-", role=ADMIN.role))
        # The radiologist's own finding, in their words: the name, IDs, a phone, a date.
        said = " ".join(words)
        await decisions.add_finding(db, TOPOLOGY, rpb.AddFindingRequest(
            study_id=str(study_id), label=f"nodule ({said})", bbox_px=[1, 1, 5, 5],
            series_instance_uid=series, sop_instance_uid=sop, frame=1,
            text=f"New since 05 March 2024 for {said}, {PATIENT_ID}/{OTHER_ID}, {ACCESSION}; "
                 f"told family at {PHONE}, {EMAIL}"), ADMIN)
        llm = FakeLlm()
        with serve(llm.app()) as port:
            async with db.unit_of_work() as s:
                await s.execute(text("update facilities set llm_base_url=:u, "
                                     "llm_model='test-model'"),
                                {"u": f"http://127.0.0.1:{port}/v1"})
            made = await drafts.generate(db, TOPOLOGY, ADMIN, str(study_id), LOOPBACK)
        assert not made.llm_failed, made.llm_error
        async with db.read() as s:
            trace = (await s.execute(text("select deid_profile from llm_traces"))).one()
            draft = (await s.execute(text("select context from drafts"))).one()
    finally:
        await db.close()

    [sent] = llm.requests
    strings = _strings(sent)
    folded = fold(" ".join(strings))
    leaked = [p for p in (*parts, *words, PATIENT_ID, OTHER_ID, ACCESSION, "Okafor", "Chiamaka",
                          "1234 5678", "example.org", "2024-03-05", "20240305", "March",
                          "19600101", uid) if fold(p) in folded]
    assert not leaked, (leaked, strings)
    content = json.loads(sent["messages"][-1]["content"])
    assert content["patient"] == {"sex": "F", "age_years": "64"}
    assert content["deidentification"] == PROFILE == trace.deid_profile
    assert draft.context["deid_profile"] == PROFILE
    study = content["study"]
    assert study["body_part"] == "CHEST" and study["modality"] == "CT"
    assert study["description"].startswith("CT CHEST follow-up [REMOVED]")
    assert study["description"].endswith(study["date_shifted"])  # the date, shifted
    assert "2023-03-06" <= study["date_shifted"] < "2024-03-05"
    assert study["reason"].startswith("Cough, smoker. Call [REMOVED] or [REMOVED]")
    [finding] = content["findings"]
    assert finding["label"].startswith("nodule (") and finding["origin"] == "radiologist"
    assert finding["radiologist_text"].startswith(f"New since {study['date_shifted']} for ")
