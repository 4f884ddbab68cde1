"""Through `sidecar up`: a facility whose PACS is a DICOMweb one (`sidecar facility set
--pacs-dicomweb URL --pacs-dicomweb-auth-stdin`; a real Orthanc with its DICOMweb plugin holding
an earlier mammogram of the same patient and another patient's study) gets its covered study's
prior listed by QIDO-RS, and retrieved on demand by WADO-RS into the sidecar as a study of the
same facility, its objects received ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar_synth import generate
from tests.acceptance.stack import Stack
from tests.acceptance.test_priors_up import _prior_of, _send, _study_id, _wait
from tests.integration.test_priors_dicomweb import DICOMWEB_PLUGIN, dicomweb_available
from tests.orthanc_peer import orthanc_in_thread


def test_a_dicomweb_pacs_prior_is_listed_and_retrieved(stack: Stack, tmp_path: Path) -> None:
    if not dicomweb_available():
        pytest.skip("needs root, unshare, Orthanc and orthanc-dicomweb")
    truth = generate("mammo", tmp_path / "now", seed=2301)
    prior_uid, prior = _prior_of(truth.patient_id, tmp_path / "prior", seed=2302)
    other_uid, other = _prior_of("SOMEONE-ELSE", tmp_path / "other", seed=2303)
    with orthanc_in_thread(tmp_path / "pacs", files=prior + other, Plugins=[DICOMWEB_PLUGIN],
                           DicomWeb={"Enable": True, "Root": "/dicom-web/"}) as (pacs, _):
        url = f"http://127.0.0.1:{pacs.http_port}/dicom-web"
        done = stack.cli("facility", "set", stack.north, "--pacs-dicomweb", url,
                         "--pacs-dicomweb-auth-stdin", stdin="Basic cGFjczpwYWNz\n")
        assert done.returncode == 0, done.stderr
        assert f"pacs_dicomweb={url}" in done.stdout and "pacs_dicomweb_auth=True" in done.stdout
        _send(stack, tmp_path / "now", stack.north)
        with stack.client() as http:
            sid = _study_id(http, truth.accession_number)
            listed = _wait(http, f"/api/v1/studies/{sid}/priors",
                           lambda j: j["lookup_status"] == "found", "the QIDO-RS lookup")
            [item] = listed["priors"]  # the other patient's study is not a prior
            assert (item["study_instance_uid"], item["study_date"], item["modalities"]) == (
                prior_uid, "20220314", ["MG"])
            assert other_uid != prior_uid
            retrieve = f"/api/v1/studies/{sid}/priors/{item['prior_id']}/retrieve"
            queued = http.post(retrieve)
            assert queued.status_code == 202, queued.text
            done_item = _wait(http, f"/api/v1/studies/{sid}/priors",
                              lambda j: j["priors"][0]["retrieved_study_id"],
                              "the retrieved prior registered")["priors"][0]
            assert done_item["retrieve_status"] == "retrieved"
            assert done_item["retrieved_count"] == len(prior)
            moved = http.get(f"/api/v1/studies/{done_item['retrieved_study_id']}").json()
            assert moved["facility"] == stack.north, moved
            events = http.get(f"/api/v1/studies/{sid}/audit").json()["events"]
            found = [e for e in events if e["type"] == "priors.found"]
            assert found and found[0]["context"]["protocol"] == "qido-rs", found
            retrieved = [e for e in events if e["type"] == "priors.retrieved"]
            assert retrieved and retrieved[0]["context"]["protocol"] == "wado-rs", retrieved
