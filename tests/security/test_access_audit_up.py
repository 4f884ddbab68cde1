"""The PHI access audit on the running product (`sidecar up`, shared HTTPS stack): one
radiologist's session — login, worklist, study, findings, DICOMweb metadata and frames, a
decision, logout — leaves exactly the expected access events, in order, with user, role,
session id, client address (X-Forwarded-For ignored from an untrusted peer) and patient; a
refused read of another facility's study is an event with the outcome refused; a DICOMweb
request of many frames is one event; and the privacy office reads the trail with
`sidecar audit access`, a read that is itself audited."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pydicom
import pytest
from pydicom.uid import generate_uid

from bench.stack import clean_env
from sidecar_synth import generate
from tests.helpers import to_bytes
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
SIDECAR = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "sidecar")
PASSWORD = "radiologist password 1"
RAD = "eaccess_rad"
FRAMES = 6
OCTETS = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}


def _ingest(stack: EdgeStack, folder: Path, facility: str) -> None:
    sent = subprocess.run(
        [SIDECAR, "ingest", str(folder), "--facility", facility, "--complete",
         "--target", stack.address("ingest"), "--data-dir", str(stack.data_dir)],
        capture_output=True, text=True, timeout=300, env=clean_env())
    assert sent.returncode == 0, sent.stdout + sent.stderr


def _study(stack: EdgeStack, accession: str, states: tuple[str, ...],
           timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    with stack.client() as http:
        while time.monotonic() < deadline:
            found = http.get("/api/v1/studies", params={"accession": accession}).json()
            if found["studies"]:
                last = found["studies"][0]
                if last["state"] in states:
                    return dict(last)
            time.sleep(1.0)
    raise AssertionError(f"{accession} never reached {states}; last seen {last}")


def _multiframe(folder: Path, source: Path) -> pydicom.Dataset:
    """A study of one instance of FRAMES frames (a slice repeated), for the coalescing check."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.AccessionNumber = "EACCMF1"
    ds.NumberOfFrames = FRAMES
    ds.PixelData = ds.PixelData * FRAMES
    folder.mkdir(parents=True)
    (folder / "mf.dcm").write_bytes(to_bytes(ds))
    return ds


def _trail(stack: EdgeStack, *args: str) -> list[dict[str, Any]]:
    done = stack.cli("audit", "access", *args, "--json", "--operator", "privacy-office")
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_a_radiologists_session_is_one_access_event_per_request(
        edge_stack: EdgeStack, tmp_path: Path) -> None:
    stack = edge_stack
    added = stack.cli("user", "add", RAD, "--role", "radiologist", "--facility", stack.north,
                      "--password-stdin", "--operator", "setup", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stdout + added.stderr
    chest, other = tmp_path / "chest", tmp_path / "other"
    truth = generate("chest-ct", chest, 41, slices=40)
    slices = sorted(chest.rglob("*.dcm"))
    mf = _multiframe(tmp_path / "mf", slices[0])
    _ingest(stack, chest, stack.north)
    _ingest(stack, tmp_path / "mf", stack.north)
    elsewhere = generate("chest-ct", other, 42, slices=8)
    _ingest(stack, other, stack.south)
    study = _study(stack, truth.accession_number, ("ready_for_review",))
    foreign = _study(stack, elsewhere.accession_number,
                     ("received", "processed", "ready_for_review", "ineligible",
                      "ai_complete", "preprocess_failed", "ai_failed"))
    _study(stack, "EACCMF1", ("received", "processed", "ready_for_review", "ineligible",
                              "preprocess_failed", "ai_failed", "ai_complete"))
    started = time.time()

    token = stack.login(RAD, PASSWORD)
    session = jwt.decode(token, options={"verify_signature": False})["jti"]
    uid, sid = study["study_instance_uid"], study["id"]
    # the shared stack trusts no proxy: a forged X-Forwarded-For is not the client address
    with stack.client(token) as rad:
        rad.headers["X-Forwarded-For"] = "203.0.113.77"
        page = rad.get("/api/v1/studies", params={"page_size": 50})
        assert page.status_code == 200, page.text
        listed = [s["id"] for s in page.json()["studies"]]
        assert sid in listed and foreign["id"] not in listed
        assert rad.get(f"/api/v1/studies/{sid}").status_code == 200
        findings = rad.get(f"/api/v1/studies/{sid}/findings").json()["findings"]
        assert findings, "the reference model found nothing to decide on"
        detail = rad.get(f"/api/v1/studies/{sid}").json()
        series = detail["series"][0]["series_instance_uid"]
        meta = rad.get(f"/dicomweb/studies/{uid}/series/{series}/metadata")
        assert meta.status_code == 200, meta.text
        sop = meta.json()[0]["00080018"]["Value"][0]
        one = rad.get(f"/dicomweb/studies/{uid}/series/{series}/instances/{sop}/frames/1",
                      headers=OCTETS)
        assert one.status_code == 200, one.text
        many = ",".join(str(n) for n in range(1, FRAMES + 1))
        frames = rad.get(f"/dicomweb/studies/{mf.StudyInstanceUID}/series/"
                         f"{mf.SeriesInstanceUID}/instances/{mf.SOPInstanceUID}/frames/{many}",
                         headers=OCTETS)
        assert frames.status_code == 200, frames.text
        refused = rad.get(f"/api/v1/studies/{foreign['id']}")
        assert refused.status_code == 404, refused.text
        decided = rad.post(f"/api/v1/studies/{sid}/findings/{findings[0]['id']}/decisions",
                           json={"action": "accept",
                                 "expected_version": findings[0]["version"]})
        assert decided.status_code == 200, decided.text
        assert rad.post("/api/v1/auth/logout").status_code == 204
        # after the logout the token is refused: the attempt is recorded too
        assert rad.get(f"/api/v1/studies/{sid}").status_code == 401

    deadline = time.monotonic() + 30
    while True:
        trail = [e for e in _trail(stack, "--user", RAD) if e["at"] >= _iso(started)]
        if sum(e["type"].startswith("phi.") for e in trail) >= 9 \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    got = [(e["type"], e["what"]) for e in trail]
    assert got == [
        ("auth.login_succeeded", "login_succeeded"),
        ("phi.accessed", "worklist"), ("phi.accessed", "study"),
        ("phi.accessed", "findings"), ("phi.accessed", "study"),
        ("phi.accessed", "metadata"), ("phi.accessed", "frames"),
        ("phi.accessed", "frames"), ("phi.access_refused", "study"),
        ("review.finding_accepted", "finding_accepted"),
        ("auth.logout", "logout"), ("phi.access_refused", "study")], got
    # the login names the session its access events carry (the gateway chose the id first),
    # and so does the decision made in it
    assert trail[0]["session"] == session, trail[0]
    decision = next(e for e in trail if e["type"] == "review.finding_accepted")
    assert (decision["role"], decision["session"]) == ("radiologist", session), decision
    access = [e for e in trail if e["type"].startswith("phi.")]
    for e in access[:-1]:
        assert (e["user"], e["role"], e["session"]) == (RAD, "radiologist", session), e
        assert e["from"] == "127.0.0.1", e  # the peer, not the forged header
    worklist, detail_event, _, _, metadata, frame, multi, foreign_event, revoked = access
    assert worklist["count"] == len(listed), \
        worklist
    patient = f"{truth.patient_id}^^^{stack.north}"
    for e in (detail_event, metadata, frame):
        assert (e["study_instance_uid"], e["patient"]) == (uid, patient), e
    assert (metadata["series"], frame["count"]) == (1, 1)
    # many frames in one request: one event, counting them
    assert (multi["study_instance_uid"], multi["count"]) == (mf.StudyInstanceUID, FRAMES), multi
    assert (foreign_event["outcome"], foreign_event["study"]) == (
        "refused 404 STUDY_NOT_FOUND", f"{elsewhere.accession_number}@{stack.south}"), \
        foreign_event
    assert revoked["outcome"] == "refused 401 TOKEN_REVOKED", revoked

    # the privacy office's questions: by patient, by study; reading is itself an event
    by_patient = _trail(stack, "--patient", patient)
    assert {e["type"] for e in by_patient} >= {"phi.accessed", "review.finding_accepted"}
    assert all(e["user"] in (RAD, "acc_admin", "privacy-office") for e in by_patient)
    by_study = _trail(stack, "--study", mf.StudyInstanceUID)
    assert [(e["what"], e["count"]) for e in by_study if e["user"] == RAD] == [
        ("worklist", len(listed)), ("frames", FRAMES)]  # the page listed it, then its frames
    reads = stack.sql("SELECT context FROM audit_events WHERE type = 'phi.accessed' AND "
                      "actor = 'operator:privacy-office' ORDER BY seq")
    assert reads and reads[-1][0]["what"] == "audit", reads
    table = stack.cli("audit", "access", "--user", RAD, "--since", "1h")
    assert table.returncode == 0, table.stderr
    print("\n" + table.stdout)  # the trail as the privacy office reads it (report, -s)


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
