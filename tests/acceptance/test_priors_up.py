"""Through `sidecar up`: a covered study's prior at the facility's PACS (a real Orthanc holding
an earlier mammogram of the same patient) is listed by GET /api/v1/studies/{id}/priors and
retrieved on demand by C-MOVE into the sidecar as a study of the same facility; a PACS that is
down leaves the study reviewable with the lookup `failed`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from sidecar_synth import generate
from tests.acceptance.stack import Stack, run_cli
from tests.helpers import to_bytes
from tests.orthanc_peer import available as orthanc_available
from tests.orthanc_peer import orthanc_in_thread
from tests.servers import free_port

MOVE_PORT = 11112  # the sidecar's DICOM port as Orthanc sees it inside its namespace
RADIOLOGIST, PASSWORD = "pri_rad_south", "priors radiologist password 1"


def _prior_of(patient_id: str, folder: Path, seed: int = 143) -> tuple[str, list[bytes]]:
    """An older mammogram (other UIDs) re-labelled as the same patient's."""
    generate("mammo", folder, seed=seed, negative=True)
    files = []
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientID = patient_id
        ds.StudyDate = "20220314"
        ds.StudyDescription = "Screening mammogram 2022"
        files.append(to_bytes(ds))
    return str(ds.StudyInstanceUID), files


def _send(stack: Stack, folder: Path, facility: str) -> None:
    done = run_cli("ingest", "--data-dir", str(stack.data_dir), str(folder), "--facility",
                   facility, "--target", stack.address("ingest"), "--complete")
    assert done.returncode == 0, done.stdout + done.stderr


def _wait(http: httpx.Client, path: str, check: Any, what: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        reply = http.get(path)
        if reply.status_code == 200:
            last = reply.json()
            if check(last):
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen in time; last {last}")


def _study_id(http: httpx.Client, accession: str) -> str:
    found = _wait(http, f"/api/v1/studies?accession={accession}",
                  lambda j: j["studies"] and j["studies"][0]["state"] == "ready_for_review",
                  f"{accession} ready_for_review")
    return str(found["studies"][0]["id"])


def test_priors_are_listed_and_retrieved_through_the_gateway(stack: Stack,
                                                             tmp_path: Path) -> None:
    if not orthanc_available():
        pytest.skip("needs root, unshare and Orthanc")
    truth = generate("mammo", tmp_path / "now", seed=141)
    prior_uid, prior = _prior_of(truth.patient_id, tmp_path / "prior")
    with orthanc_in_thread(tmp_path / "pacs", aet=stack.north_ae,
                           back=(MOVE_PORT, stack.ports["dicom"]), files=prior,
                           DicomModalities={"sidecar": ["SIDECAR", "127.0.0.1", MOVE_PORT]}
                           ) as (pacs, _):
        done = stack.cli("facility", "set", stack.north, "--pacs",
                         f"{stack.north_ae}@127.0.0.1:{pacs.dicom_port}")
        assert done.returncode == 0, done.stderr
        _send(stack, tmp_path / "now", stack.north)
        with stack.client() as http:
            sid = _study_id(http, truth.accession_number)
            listed = _wait(http, f"/api/v1/studies/{sid}/priors",
                           lambda j: j["lookup_status"] == "found", "the priors lookup")
            [item] = listed["priors"]
            assert (item["study_instance_uid"], item["study_date"], item["modalities"]) == (
                prior_uid, "20220314", ["MG"])
            assert item["retrieve_status"] == ""
            retrieve = f"/api/v1/studies/{sid}/priors/{item['prior_id']}/retrieve"
            queued = http.post(retrieve)
            assert queued.status_code == 202, queued.text
            assert queued.json()["retrieve_status"] in ("queued", "retrieving", "retrieved")
            done_item = _wait(http, f"/api/v1/studies/{sid}/priors",
                              lambda j: j["priors"][0]["retrieved_study_id"],
                              "the retrieved prior registered")["priors"][0]
            assert done_item["retrieve_status"] == "retrieved"
            assert done_item["retrieved_count"] == len(prior)
            # the retrieved prior is a study of the same facility, its objects received ones
            moved = http.get(f"/api/v1/studies/{done_item['retrieved_study_id']}").json()
            assert moved["facility"] == stack.north, moved
            assert http.post(retrieve).json()["retrieve_status"] == "retrieved"  # no second
            # bad input: a precise error
            bad = http.post(f"/api/v1/studies/{sid}/priors/not-a-uuid/retrieve")
            assert bad.status_code == 400 and bad.json()["error"]["reason"] == "INVALID_PRIOR_ID"
            events = [e["type"] for e in http.get(f"/api/v1/studies/{sid}/audit").json()[
                "events"]]
            assert {"priors.found", "priors.retrieve_queued", "priors.retrieved"} <= set(events)
    # a radiologist of the other facility does not see these priors
    added = stack.cli("user", "add", RADIOLOGIST, "--role", "radiologist", "--facility",
                      stack.south, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    with stack.client(stack.login(RADIOLOGIST, PASSWORD)) as other:
        assert other.get(f"/api/v1/studies/{sid}/priors").status_code == 404
        assert other.post(retrieve).status_code == 404


def test_a_pacs_that_is_down_never_blocks_the_study(stack: Stack, tmp_path: Path) -> None:
    done = stack.cli("facility", "set", stack.south, "--pacs",
                     f"{stack.south_ae}@127.0.0.1:{free_port()}")  # nothing listens there
    assert done.returncode == 0, done.stderr
    truth = generate("mammo", tmp_path / "now", seed=142)
    _send(stack, tmp_path / "now", stack.south)
    with stack.client() as http:
        sid = _study_id(http, truth.accession_number)
        listed = _wait(http, f"/api/v1/studies/{sid}/priors",
                       lambda j: j["lookup_status"] == "failed", "the failed lookup", 120)
        assert listed["priors"] == []
        events = [e["type"] for e in http.get(f"/api/v1/studies/{sid}/audit").json()["events"]]
        assert "priors.failed" in events
