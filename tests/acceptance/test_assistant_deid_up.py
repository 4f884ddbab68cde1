"""Through `sidecar up` (issue 23 item 4): the patient's name never reaches the LLM server. It is
in the study's description (received by DICOM through the ingest service), in the prior report
the RIS sent over MLLP to the running HL7 listener, and in the radiologist's chat message; the
LLM server (an OpenAI-compatible fake recording every request) gets the prior's findings, cited
as PRIOR-1, and none of the patient's names, IDs, accession numbers or phone number."""

from __future__ import annotations

import json
from pathlib import Path

from tests import hl7_peer
from tests.acceptance.stack import Stack, run_cli, site_on
from tests.acceptance.test_report_loop import _study
from tests.fake_llm import FakeLlm
from tests.helpers import ct_slice, to_bytes
from tests.http_peers import serve

SENDER = "RIS_DEID"
FAMILY, GIVEN = "Kowalczyk", "Zofia"
MRN, ISSUER = "MRN-DEID-7", "HOSPDEID"
PRIOR_ACCESSION, ACCESSION = "ACCDEIDPRIOR1", "ACC-DEID-NOW"
PHONE = "030 1234 5678"


def _prior_oru() -> bytes:
    """The RIS's final report of the patient's earlier CT: the names and the phone number in
    its text, PID-3 with its assigning authority (how a prior is tied to the patient)."""
    return ("\r".join([
        f"MSH|^~\\&|RIS|{SENDER}|SIDECAR|SIDECAR|20250601113000||ORU^R01^ORU_R01|DEID-PRIOR-1"
        "|P|2.5.1",
        f"PID|1||{MRN}^^^{ISSUER}^MR||{FAMILY}^{GIVEN}",
        f"OBR|1||{PRIOR_ACCESSION}^RIS|71250^CT CHEST|||20250601101500|||||||||||||"
        f"RPT-{PRIOR_ACCESSION}||20250601113000|||F",
        f"OBX|1|TX|IMP^Impression||{GIVEN} {FAMILY.upper()}: 6 mm nodule right upper lobe. "
        f"Called Dr Nowak on {PHONE}.||||||F",
    ]) + "\r").encode()


def _send_study(site: Stack, tmp: Path) -> None:
    folder = tmp / "study"
    folder.mkdir()
    study_uid = None
    for z in range(3):
        ds = ct_slice(study_uid=study_uid, z=float(z), accession=ACCESSION)
        study_uid = ds.StudyInstanceUID
        ds.PatientName = f"{FAMILY}^{GIVEN}"
        ds.PatientID, ds.IssuerOfPatientID = MRN, ISSUER
        ds.StudyDate = "20260301"
        ds.StudyDescription = f"CT CHEST follow-up {FAMILY}"
        ds.ReferringPhysicianName = "Nowak^Adam"
        (folder / f"{z}.dcm").write_bytes(to_bytes(ds))
    done = run_cli("ingest", "--data-dir", str(site.data_dir), str(folder), "--facility",
                   site.north, "--target", site.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_patients_name_never_reaches_the_llm(stack: Stack, tmp_path: Path) -> None:
    site = site_on(stack, "deid")
    fake = FakeLlm()
    with serve(fake.app()) as port:
        done = site.cli("facility", "set", site.north, "--hl7-sending-facility", SENDER,
                        "--llm-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "m",
                        "--prior-report-lookback-days", "3650", "--prior-report-max", "1")
        assert done.returncode == 0, done.stderr
        assert "prior_report_lookback_days=3650 prior_report_max=1" in done.stdout, done.stdout
        ack = hl7_peer.mllp(site.ports["hl7"], _prior_oru())
        assert "MSA|AA|DEID-PRIOR-1" in ack, ack
        _send_study(site, tmp_path)
        study = _study(site, ACCESSION, "ineligible")
        with site.client() as http:
            asked = http.post(f"/api/v1/studies/{study['id']}/chat", json={
                "message": f"Has {GIVEN} {FAMILY}'s nodule grown since {PRIOR_ACCESSION}?"})
            assert asked.status_code == 200, asked.text
            answer = asked.json()
    assert [c["ref"] for c in answer["citations"]] == ["PRIOR-1"], answer
    assert fake.requests, "the LLM server was never asked"
    sent = json.dumps(fake.requests).lower()
    assert "6 mm nodule right upper lobe" in sent  # the prior report arrived, de-identified
    for leaked in (FAMILY, GIVEN, MRN, ISSUER, PRIOR_ACCESSION, ACCESSION, PHONE, "nowak"):
        assert leaked.lower() not in sent, f"{leaked!r} reached the LLM server"
    # the report text is sealed at rest: the stored row holds no plaintext
    [(sealed,)] = site.sql("select report_text_enc from legacy_reports where accession = %s",
                           PRIOR_ACCESSION)
    assert sealed and b"nodule" not in bytes(sealed)
    # and so is the message as received (its PID names the patient)
    [(kept,)] = site.sql("select raw from hl7_messages where control_id = %s", "DEID-PRIOR-1")
    assert bytes(kept).startswith(b"sealed:v1:")
    assert FAMILY.encode() not in bytes(kept) and b"nodule" not in bytes(kept)
