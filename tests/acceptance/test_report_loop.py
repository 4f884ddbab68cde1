"""Through `sidecar up`: an ORU^R01 over MLLP completes a study, the webhook records its status."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest

from sidecar_synth import generate
from tests import hl7_peer
from tests.acceptance.stack import Stack, run_cli
from tests.helpers import ct_slice, to_bytes
from tests.http_peers import WebhookReceiver, serve
from tests.orthanc_peer import available as orthanc_available
from tests.orthanc_peer import orthanc_in_thread

SECRET = "north webhook secret"
SENDER = "NORTH_RIS"


def _oru(control_id: str, accession: str) -> bytes:
    return hl7_peer.oru(control_id, accession, SENDER)


_mllp = hl7_peer.mllp


def _ingest(stack: Stack, tmp: Path, accession: str) -> None:
    folder = tmp / accession
    folder.mkdir()
    study_uid = None
    for z in range(3):
        ds = ct_slice(study_uid=study_uid, z=float(z), accession=accession)
        study_uid = ds.StudyInstanceUID
        (folder / f"{z}.dcm").write_bytes(to_bytes(ds))
    done = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(folder), "--facility", stack.north, "--target",
                   stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr


def _study(stack: Stack, accession: str, until: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    with stack.client() as http:
        while time.monotonic() < deadline:
            found = http.get("/api/v1/studies", params={"accession": accession}).json()
            if found["studies"]:
                last = http.get(f"/api/v1/studies/{found['studies'][0]['id']}").json()
                if last["state"] == until:
                    return dict(last)
            time.sleep(0.5)
    raise AssertionError(f"{accession} never reached {until}; last seen {last}")


def test_oru_completes_the_study_and_the_webhook_records_it(stack: Stack, tmp_path: Path
                                                              ) -> None:
    receiver = WebhookReceiver(SECRET)
    with serve(receiver.app()) as port:
        done = stack.cli("facility", "set", stack.north, "--hl7-sending-facility", SENDER,
                         "--handoff-url", f"http://127.0.0.1:{port}/sidecar/status",
                         "--handoff-secret-stdin", stdin=SECRET + "\n")
        assert done.returncode == 0, done.stderr
        _ingest(stack, tmp_path, "ACC-LOOP-1")
        registered = _study(stack, "ACC-LOOP-1", "ineligible")  # 16x16 CT: no model covers it
        assert registered["state"] == "ineligible"

        ack = _mllp(stack.ports["hl7"], _oru("LOOP-1", "ACC-LOOP-1"))
        assert "MSA|AA|LOOP-1" in ack, ack
        study = _study(stack, "ACC-LOOP-1", "status_recorded")
        states = [t["state"] for t in study["state_history"]]
        assert states[-2:] == ["legacy_report_completed", "status_recorded"], states
        assert states[0] == "received"
        assert len(receiver.received) == 1 and receiver.refused == 0

        # a report for a study that has not arrived yet waits, then completes it on arrival
        ack = _mllp(stack.ports["hl7"], _oru("LOOP-2", "ACC-LOOP-2"))
        assert "MSA|AA|LOOP-2" in ack and "0 matched" in ack, ack
        _ingest(stack, tmp_path, "ACC-LOOP-2")
        _study(stack, "ACC-LOOP-2", "status_recorded")
        assert len(receiver.received) == 2

        # the same message again changes nothing
        assert "MSA|AA|LOOP-1" in _mllp(stack.ports["hl7"], _oru("LOOP-1", "ACC-LOOP-1"))
        time.sleep(1.0)
        assert len(receiver.received) == 2


def test_malformed_oru_gets_a_nak_naming_the_field(stack: Stack) -> None:
    bad = _oru("LOOP-BAD", "ACC-X").replace(b"|||F\r", b"|||\r")
    ack = _mllp(stack.ports["hl7"], bad)
    assert "MSA|AE|LOOP-BAD" in ack and "OBR^1^25" in ack, ack


def test_draft_generate_edit_accept_through_the_gateway(stack: Stack, tmp_path: Path) -> None:
    # a study of this test's own (any state takes a draft): each test runs alone too
    _ingest(stack, tmp_path, "ACC-LOOP-DRAFT")
    study = _study(stack, "ACC-LOOP-DRAFT", "ineligible")  # 16x16 CT: no model covers it
    with stack.client() as http:
        made = http.post(f"/api/v1/studies/{study['id']}/draft")
        assert made.status_code == 200, made.text
        draft = made.json()["draft"]
        assert made.json()["llm_failed"] is False and draft["assistive"] is True
        assert draft["generator"].startswith("template-drafter/1") and draft["version"] == 1
        edited = http.put(f"/api/v1/studies/{study['id']}/draft",
                          json={"expected_version": 1, "text": "No acute findings."})
        assert edited.status_code == 200 and edited.json()["version"] == 2, edited.text
        stale = http.post(f"/api/v1/studies/{study['id']}/draft/accept",
                          json={"expected_version": 1})
        assert stale.status_code == 409 and stale.json()["error"]["reason"] == "VERSION_CONFLICT"
        accepted = http.post(f"/api/v1/studies/{study['id']}/draft/accept",
                             json={"expected_version": 2})
        assert accepted.json()["status"] == "accepted", accepted.text
        versions = http.get(f"/api/v1/studies/{study['id']}/draft").json()["versions"]
        assert [v["status"] for v in versions] == ["generated", "edited", "accepted"]
        assert http.post(f"/api/v1/studies/{uuid.uuid4()}/draft").status_code == 404


def test_review_completion_sends_sr_and_seg_to_the_pacs(stack: Stack, tmp_path: Path) -> None:
    """A brain MR with a lesion: the radiologist accepts the finding and completes the review;
    the facility's PACS (a real Orthanc) receives the SR and SEG, read back with highdicom."""
    if not orthanc_available():
        pytest.skip("needs root, unshare and Orthanc")
    truth = generate("brain-mr", tmp_path / "mr", seed=25, slices=20, rows=160, cols=160,
                     lesions=1)
    with orthanc_in_thread(tmp_path / "pacs") as (pacs, stored):
        done = stack.cli("facility", "set", stack.south, "--pacs",
                         f"ORTHANC@127.0.0.1:{pacs.dicom_port}")
        assert done.returncode == 0, done.stderr
        sent = run_cli("ingest", "--data-dir", str(stack.data_dir),
                       str(tmp_path / "mr"), "--facility", stack.south, "--target",
                       stack.address("ingest"), "--complete")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        study = _study(stack, truth.accession_number, "ready_for_review", timeout=240)
        with stack.client() as http:
            findings = http.get(f"/api/v1/studies/{study['id']}/findings").json()["findings"]
            assert findings, "the reference model found nothing"
            first = findings[0]
            decided = http.post(f"/api/v1/studies/{study['id']}/findings/{first['id']}"
                                "/decisions", json={"action": "accept",
                                                    "expected_version": first["version"]})
            assert decided.status_code == 200, decided.text
            completed = http.post(f"/api/v1/studies/{study['id']}/complete")
            assert completed.status_code == 200, completed.text
            deadline = time.monotonic() + 240
            files: list[bytes] = []
            while time.monotonic() < deadline and len(files) < 2:
                time.sleep(1.0)
                files = stored()
            events = http.get(f"/api/v1/studies/{study['id']}/audit").json()["events"]
        kinds = {pydicom.dcmread(io.BytesIO(f)).Modality: f for f in files}
        assert set(kinds) == {"SR", "SEG"}, [e["type"] for e in events]
        report = hd.sr.srread(io.BytesIO(kinds["SR"]))
        uids = {g.tracking_uid for g in report.content.get_planar_roi_measurement_groups()}
        uids |= {g.tracking_uid for g in report.content.get_volumetric_roi_measurement_groups()}
        assert f"2.25.{uuid.UUID(first['id']).int}" in uids
        assert hd.seg.segread(io.BytesIO(kinds["SEG"])).number_of_segments >= 1
        assert sum(e["type"] == "export.sent" for e in events) == 2
