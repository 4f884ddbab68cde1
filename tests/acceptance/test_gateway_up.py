"""The README's "Gateway API" on a running `sidecar up`, with a synthetic brain MR that went all
the way to findings: login, studies, findings, audit, assets (ETag/304), viewport and overlay,
/healthz, /openapi.json, the error shape, facility scoping; then `sidecar objects verify`."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.stack import Stack, run_cli

READY = "ready_for_review"


@dataclass
class Study:
    uid: str
    accession: str
    id: str
    detail: dict[str, Any]
    findings: list[dict[str, Any]]


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def send(stack: Stack, folder: Path, facility: str, seed: int) -> dict[str, Any]:
    """`sidecar synth` a brain MR into `folder`, `sidecar ingest --complete` it; its truth."""
    assert run_cli("synth", str(folder), "--kind", "brain-mr", "--seed", str(seed)) \
        .returncode == 0
    sent = run_cli("ingest", "--data-dir", str(stack.data_dir),
                   str(folder), "--facility", facility, "--target",
                   stack.address("ingest"), "--complete")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    truth = dict(json.loads((folder / "ground_truth.json").read_text()))
    assert truth["lesions"], f"seed {seed} is a negative control: pick one with lesions"
    return truth


def wait_ready(stack: Stack, truth: dict[str, Any]) -> Study:
    with stack.client() as http:
        def ready() -> dict[str, Any] | None:
            found = http.get("/api/v1/studies", params={"accession": truth["accession_number"]})
            rows = found.json()["studies"]
            return rows[0] if rows and rows[0]["state"] == READY else None

        row = wait_for(ready, 300, f"study {truth['accession_number']} {READY}")
        detail = http.get(f"/api/v1/studies/{row['id']}").json()
        findings = http.get(f"/api/v1/studies/{row['id']}/findings").json()["findings"]
    return Study(truth["study_instance_uid"], truth["accession_number"], row["id"], detail,
                 findings)


@pytest.fixture(scope="module")
def sent(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One brain MR into the module's north, one into its south after `facility set SOUTH
    --shadow-mode on`; both sent before either is awaited."""
    root = tmp_path_factory.mktemp("in")
    done = stack.cli("facility", "set", stack.south, "--shadow-mode", "on")
    assert done.returncode == 0, done.stderr
    return {"north": send(stack, root / "north", stack.north, 21),
            "shadow": send(stack, root / "shadow", stack.south, 23)}


@pytest.fixture(scope="module")
def study(stack: Stack, sent: dict[str, dict[str, Any]]) -> Study:
    return wait_ready(stack, sent["north"])


@pytest.fixture(scope="module")
def shadow_study(stack: Stack, sent: dict[str, dict[str, Any]]) -> Study:
    return wait_ready(stack, sent["shadow"])


def assert_error(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"code", "reason", "message"} and error["code"] == code, error


def test_login_gives_a_token_and_a_wrong_password_is_401(stack: Stack) -> None:
    url = f"{stack.base_url}/api/v1/auth/login"
    good = httpx.post(url, json={"username": stack.admin, "password": stack.password}, timeout=30)
    assert good.status_code == 200 and good.json()["access_token"]
    bad = httpx.post(url, json={"username": stack.admin, "password": "wrong"}, timeout=30)
    assert_error(bad, 401, "UNAUTHENTICATED")


def test_every_api_call_needs_a_bearer_token(stack: Stack) -> None:
    reply = httpx.get(f"{stack.base_url}/api/v1/studies", timeout=30)
    assert_error(reply, 401, "UNAUTHENTICATED")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    forged = httpx.get(f"{stack.base_url}/api/v1/studies", timeout=30,
                       headers={"Authorization": "Bearer not.a.token"})
    assert_error(forged, 401, "UNAUTHENTICATED")


def test_studies_list_by_accession_and_detail(stack: Stack, study: Study) -> None:
    assert study.detail["study_instance_uid"] == study.uid
    assert study.detail["facility"] == stack.north
    states = [t["state"] for t in study.detail["state_history"]]
    assert states[0] == "received" and states[-1] == READY
    series = [s for s in study.detail["series"] if not s["derived"]]
    assert series and all(s["thumbnail_url"] and s["viewport_url_template"] and
                          s["overlay_url_template"] and s["presets"] for s in series)
    # The AI results as DICOM (SR, SEG) are series of their own, marked derived.
    derived = {s["modality"] for s in study.detail["series"] if s["derived"]}
    assert derived <= {"SR", "SEG"}
    with stack.client() as http:
        none = http.get("/api/v1/studies", params={"accession": "NO-SUCH-ACCESSION"})
    assert none.status_code == 200 and none.json()["studies"] == []


def test_findings_carry_their_key_slice(study: Study) -> None:
    assert study.findings, "the reference model found nothing in a study with lesions"
    series_ids = {s["id"] for s in study.detail["series"]}
    for finding in study.findings:
        assert finding["series_id"] in series_ids and finding["slice_index"] >= 0
        assert 0.0 <= finding["confidence"] <= 1.0
        assert finding["model"]["name"] == "brain_mr_lesions"


def test_audit_trail_of_the_study(stack: Stack, study: Study) -> None:
    with stack.client() as http:
        events = http.get(f"/api/v1/studies/{study.id}/audit").json()["events"]
    types = {e["type"] for e in events}
    assert "study.state_changed" in types
    reached = {e["context"].get("to") or e["context"].get("state") for e in events
               if e["type"] == "study.state_changed"}
    assert READY in reached, reached


def test_asset_has_a_content_hash_etag_and_304(stack: Stack, study: Study) -> None:
    url = study.detail["series"][0]["thumbnail_url"]
    with stack.client() as http:
        first = http.get(url)
        assert first.status_code == 200 and first.content[:8] == b"\x89PNG\r\n\x1a\n"
        etag = first.headers["ETag"]
        assert len(etag.strip('"')) == 64
        again = http.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        other = http.get(url, headers={"If-None-Match": '"0000"'})
        assert other.status_code == 200


def test_viewport_and_overlay_of_the_key_slice(stack: Stack, study: Study) -> None:
    finding = study.findings[0]
    series = next(s for s in study.detail["series"] if s["id"] == finding["series_id"])
    preset = series["presets"][0]
    viewport = series["viewport_url_template"].format(slice=finding["slice_index"], preset=preset)
    overlay = series["overlay_url_template"].format(slice=finding["slice_index"], preset=preset)
    with stack.client() as http:
        image = http.get(viewport)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert http.get(viewport, headers={"If-None-Match": image.headers["ETag"]}) \
            .status_code == 304
        drawn = wait_for(lambda: (r := http.get(overlay)).status_code == 200 and r, 60,
                         "overlay of the key slice")
        assert drawn.headers["content-type"] == "image/png"
        beyond = series["viewport_url_template"].format(slice=10_000, preset=preset)
        assert_error(http.get(beyond), 404, "NOT_FOUND")


def test_errors_have_one_shape(stack: Stack) -> None:
    with stack.client() as http:
        assert_error(http.get(f"/api/v1/studies/{uuid.uuid4()}"), 404, "NOT_FOUND")
        assert_error(http.get("/api/v1/studies/not-a-uuid"), 400, "INVALID_ARGUMENT")
        assert_error(http.get("/api/v1/no/such/route"), 404, "NOT_FOUND")
        assert_error(http.get("/api/v1/studies", params={"page_size": "-1"}), 400,
                     "INVALID_ARGUMENT")
    assert_error(httpx.post(f"{stack.base_url}/api/v1/auth/login", json={"username": ""},
                            timeout=30), 422, "INVALID_ARGUMENT")


def test_openapi_document_lists_the_api(stack: Stack) -> None:
    reply = httpx.get(f"{stack.base_url}/openapi.json", timeout=30)
    assert reply.status_code == 200
    paths = set(reply.json()["paths"])
    assert {"/healthz", "/api/v1/auth/login", "/api/v1/studies", "/api/v1/studies/{study_id}",
            "/api/v1/studies/{study_id}/findings", "/api/v1/studies/{study_id}/audit",
            "/api/v1/studies/{study_id}/assets/{asset_id}"} <= paths


def test_a_radiologist_sees_only_their_facility(stack: Stack, study: Study) -> None:
    added = stack.cli("user", "add", "south_rad", "--role", "radiologist", "--facility",
                      stack.south, "--password-stdin", stdin="south radiologist pw\n")
    assert added.returncode == 0, added.stderr
    token = stack.login("south_rad", "south radiologist pw")
    with stack.client(token) as http:
        listed = http.get("/api/v1/studies").json()["studies"]
        assert study.id not in {s["id"] for s in listed}
        assert_error(http.get(f"/api/v1/studies/{study.id}"), 404, "NOT_FOUND")


def test_shadow_mode_hides_findings_from_all_but_admins_and_auditors(
        stack: Stack, shadow_study: Study) -> None:
    assert shadow_study.findings == []  # the admin's default view: hidden
    with stack.client() as http:
        hidden = http.get(f"/api/v1/studies/{shadow_study.id}/findings",
                          params={"include_hidden": "true"}).json()["findings"]
    assert hidden and all(f["model"]["name"] == "brain_mr_lesions" for f in hidden)
    added = stack.cli("user", "add", "south_rad2", "--role", "radiologist", "--facility",
                      stack.south, "--password-stdin", stdin="south radiologist pw2\n")
    assert added.returncode == 0, added.stderr
    with stack.client(stack.login("south_rad2", "south radiologist pw2")) as http:
        mine = http.get(f"/api/v1/studies/{shadow_study.id}/findings")
        assert mine.status_code == 200 and mine.json()["findings"] == []
        assert_error(http.get(f"/api/v1/studies/{shadow_study.id}/findings",
                              params={"include_hidden": "true"}), 403, "PERMISSION_DENIED")


def test_objects_verify_passes_then_finds_a_damaged_object(stack: Stack, study: Study) -> None:
    """Last in the module: it damages one stored object."""
    intact = stack.cli("objects", "verify", "--study", study.uid)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "0 missing, 0 damaged" in intact.stdout
    key = stack.sql("select i.object_key from instances i join studies s on s.id = i.study_id "
                    "where s.study_instance_uid = %s order by i.object_key limit 1",
                    study.uid)[0][0]
    segment, offset = key.split("/")[1:3]
    pack = Path(stack.data_dir) / "objects" / "packs" / f"{segment}.pack"
    with pack.open("r+b") as fh:
        fh.seek(int(offset) + 200)
        byte = fh.read(1)
        fh.seek(int(offset) + 200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    damaged = stack.cli("objects", "verify", "--study", study.uid)
    assert damaged.returncode == 1
    assert f"damaged: study {study.uid}" in damaged.stdout and "1 damaged" in damaged.stdout
