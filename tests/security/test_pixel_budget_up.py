"""`sidecar up` and a DICOM object whose header declares 65,535 × 65,535 × 1,000 pixels in a few
hundred bytes, sent in a chest CT series an AI model covers: it is stored as sent, refused by
the pixel budget before any decode (`asset.preprocess_failed` with the reason), its frames and
rendered image are refused with a clear error, and the rest of the study flows to review."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from bench.stack import clean_env
from sidecar_synth import generate
from tests.helpers import declaring_huge_pixels, to_bytes
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
SIDECAR = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "sidecar")
WATCHED = ("imaging_svc.main", "ingest_svc.main", "review_gateway.main")


def _study(stack: EdgeStack, accession: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    with stack.client() as http:
        while time.monotonic() < deadline:
            found = http.get("/api/v1/studies", params={"accession": accession}).json()
            if found["studies"]:
                last = found["studies"][0]
                if last["state"] in ("ready_for_review", "preprocess_failed", "ai_failed",
                                     "ineligible"):
                    return dict(last)
            time.sleep(1.0)
    raise AssertionError(f"{accession} never reached review; last seen {last}")


def test_huge_declared_object_fails_preprocess_and_the_study_still_flows(
        edge_stack: EdgeStack, tmp_path: Path) -> None:
    stack = edge_stack
    pids = {name: pid for name, pid in stack.children().items() if name in WATCHED}
    assert set(pids) == set(WATCHED), pids
    folder = tmp_path / "chest"
    truth = generate("chest-ct", folder, 31, slices=48)  # 1.33 mm pixels: eligible
    base = pydicom.dcmread(sorted(folder.rglob("*.dcm"))[0])
    huge = declaring_huge_pixels(base)
    (folder / "huge.dcm").write_bytes(to_bytes(huge))
    sent = subprocess.run(
        [SIDECAR, "ingest", str(folder), "--facility", stack.north, "--complete",
         "--target", stack.address("ingest"), "--data-dir", str(stack.data_dir)],
        capture_output=True, text=True, timeout=300, env=clean_env())
    assert sent.returncode == 0, sent.stdout + sent.stderr

    study = _study(stack, truth.accession_number)
    assert study["state"] == "ready_for_review", study  # the 48 good slices went through AI
    failures = stack.sql(
        "select error_class, error_message, context from audit_events "
        "where type='asset.preprocess_failed' and study_instance_uid=%s",
        str(base.StudyInstanceUID))
    assert [(f[0], f[2]["sop_instance_uid"]) for f in failures] == [
        ("PixelBudgetExceeded", huge.SOPInstanceUID)], failures
    assert "65535 rows × 65535 columns × 1000 frames" in failures[0][1]
    assert "SIDECAR_MAX_PIXELS" in failures[0][1]

    # stored as the PACS sent it; decoding it on request is refused, not attempted
    instance = (f"/dicomweb/studies/{huge.StudyInstanceUID}/series/{huge.SeriesInstanceUID}"
                f"/instances/{huge.SOPInstanceUID}")
    with stack.client() as http:
        frames = http.get(f"{instance}/frames/1", headers={
            "Accept": 'multipart/related; type="application/octet-stream"; '
                      "transfer-syntax=1.2.840.10008.1.2.1"})
        assert frames.status_code == 406, frames.text
        assert frames.json()["error"]["reason"] == "PIXEL_BUDGET_EXCEEDED", frames.text
        rendered = http.get(f"{instance}/rendered", headers={"Accept": "image/png"})
        assert rendered.status_code == 400, rendered.text
        assert rendered.json()["error"]["reason"] == "CANNOT_RENDER", rendered.text
        assert "over the pixel budget" in rendered.text
        stored = http.get(f"{instance}/frames/1", headers={
            "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
        assert stored.status_code == 200, stored.text
        assert http.get("/healthz").status_code == 200
    # the same processes as before: nothing crashed and was restarted
    assert {name: stack.children().get(name) for name in WATCHED} == pids
