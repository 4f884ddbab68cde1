"""The OHIF hand-over on the shared `sidecar up --tls-cert` stack: a signed-in user gets a
one-time code for a study they may see; the viewer's origin exchanges it once for a DICOMweb
token that reads that one study only (QIDO narrowed to it, another study 403, no STOW, no
review API) for at most 10 minutes; reuse, expiry, forgery and logout are refused; the
hand-over is audited (who, which study)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pydicom
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sidecar_core.security import session_tokens
from tests.acceptance.stack import ae_title, run_cli
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
RADIOLOGIST_PASSWORD = "handover-radiologist-pw-1"


def _storescu(stack: EdgeStack, facility: str, folder: Path) -> str:
    files = sorted(str(p) for p in folder.glob("**/*.dcm"))
    done = subprocess.run(["/usr/bin/storescu", "-aet", ae_title(facility), "-aec", "SIDECAR",
                           "127.0.0.1", str(stack.ports["dicom"]), *files],
                          capture_output=True, text=True, timeout=180, env=DCMTK_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def stack(edge_stack: EdgeStack) -> EdgeStack:
    return edge_stack


@pytest.fixture(scope="module")
def studies(stack: EdgeStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One brain MR in the module's north facility and one in its south, by facility:
    {'north': (review study id, StudyInstanceUID), 'south': ...}."""
    uids = {}
    for facility, seed in ((stack.north, "31"), (stack.south, "32")):
        out = tmp_path_factory.mktemp("synth") / facility
        done = run_cli("synth", str(out), "--kind", "brain-mr", "--seed", seed)
        assert done.returncode == 0, done.stderr
        uids[facility] = _storescu(stack, facility, out)
    found: dict[str, Any] = {}
    deadline = time.monotonic() + 180
    with stack.client() as http:
        while len(found) < 2 and time.monotonic() < deadline:
            listed = http.get("/api/v1/studies", params={"page_size": "200"})
            assert listed.status_code == 200, listed.text
            for s in listed.json()["studies"]:
                for facility, uid in uids.items():
                    if s["study_instance_uid"] == uid:
                        found["north" if facility == stack.north else "south"] = (s["id"], uid)
            time.sleep(1)
    assert len(found) == 2, f"the studies never reached the worklist: {found}"
    return found


@pytest.fixture(scope="module")
def radiologist(stack: EdgeStack) -> str:
    """A radiologist of the module's north facility only."""
    name = f"hand{uuid.uuid4().hex[:8]}"
    done = stack.cli("user", "add", name, "--role", "radiologist", "--facility", stack.north,
                     "--password-stdin", stdin=RADIOLOGIST_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    return name


def _http(stack: EdgeStack, token: str | None = None, **headers: str) -> httpx.Client:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=stack.base_url, timeout=60, verify=stack.trusting(),
                        headers=headers)


def _code(stack: EdgeStack, session: str, study_id: str) -> httpx.Response:
    with _http(stack, session) as http:
        return http.post("/api/v1/viewer/handover", json={"study_id": study_id})


def _exchange(stack: EdgeStack, code: str) -> httpx.Response:
    """As the viewer does it: a cross-origin POST from the viewer's origin, no cookie."""
    with _http(stack, Origin=stack.viewer_url) as http:
        return http.post("/api/v1/viewer/token", json={"code": code})


def _reason(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["reason"])


def test_a_code_is_exchanged_once_for_a_read_only_token_of_one_study(
        stack: EdgeStack, studies: dict[str, Any], radiologist: str) -> None:
    (north_id, north_uid), (south_id, south_uid) = studies["north"], studies["south"]
    session = stack.login(radiologist, RADIOLOGIST_PASSWORD)
    # Only a study the user may see gets a code.
    assert _code(stack, session, south_id).status_code == 404
    issued = _code(stack, session, north_id)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["study_instance_uid"] == north_uid and body["expires_in"] == 60
    assert session not in body["code"]

    # The viewer's origin may call the exchange from the browser (CORS preflight).
    with _http(stack) as http:
        preflight = http.options("/api/v1/viewer/token", headers={
            "Origin": stack.viewer_url, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == stack.viewer_url

    # The code itself is no bearer token anywhere.
    with _http(stack, body["code"]) as http:
        assert _reason(http.get("/dicomweb/studies")) == "TOKEN_USE_NOT_ALLOWED"
        assert _reason(http.get("/api/v1/studies")) == "TOKEN_USE_NOT_ALLOWED"

    exchanged = _exchange(stack, body["code"])
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.headers["access-control-allow-origin"] == stack.viewer_url
    viewer = exchanged.json()
    assert viewer["study_instance_uid"] == north_uid and 0 < viewer["expires_in"] <= 600
    claims = jwt.decode(viewer["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["use"] == "viewer" and claims["study"] == north_uid
    assert claims["fac"] == [stack.north] and not claims.get("fac_all")

    # Once only; a flood of replays is one refusal in the audit, not one per attempt.
    for _ in range(20):
        again = _exchange(stack, body["code"])
        assert again.status_code == 401 and _reason(again) == "INVALID_CODE"

    token = viewer["access_token"]
    with _http(stack, token, Accept="application/dicom+json") as http:
        listed = http.get("/dicomweb/studies")
        assert listed.status_code == 200, listed.text
        assert [s["0020000D"]["Value"][0] for s in listed.json()] == [north_uid]
        # Asking for another study by QIDO still finds only the token's study.
        asked = http.get("/dicomweb/studies", params={"StudyInstanceUID": south_uid})
        assert [s["0020000D"]["Value"][0] for s in asked.json()] == [north_uid]
        series = http.get(f"/dicomweb/studies/{north_uid}/series")
        assert series.status_code == 200 and series.json()
        se = series.json()[0]["0020000E"]["Value"][0]
        metadata = http.get(f"/dicomweb/studies/{north_uid}/series/{se}/metadata")
        assert metadata.status_code == 200 and metadata.json()
        other = http.get(f"/dicomweb/studies/{south_uid}/series")
        assert other.status_code == 403 and _reason(other) == "VIEWER_TOKEN_OTHER_STUDY"
        assert http.get(f"/dicomweb/studies/{south_uid}/metadata").status_code == 403
        assert http.get("/dicomweb/series").status_code == 403
        stow = http.post("/dicomweb/studies", content=b"--x--",
                         headers={"Content-Type": "multipart/related; type=application/dicom;"
                                                  " boundary=x"})
        assert stow.status_code == 403 and _reason(stow) == "VIEWER_TOKEN_READ_ONLY"
        assert _reason(http.get("/api/v1/studies")) == "TOKEN_USE_NOT_ALLOWED"
        assert _reason(http.get("/api/v1/me")) == "TOKEN_USE_NOT_ALLOWED"
        assert http.post("/api/v1/viewer/handover",
                         json={"study_id": north_id}).status_code == 403

    audit = stack.sql("select type, actor, facility, study_instance_uid from audit_events "
                      "where type like 'viewer.handover%%' and actor = %s order by seq",
                      f"user:{radiologist}")
    assert audit == [("viewer.handover", f"user:{radiologist}", stack.north, north_uid),
                     ("viewer.handover_refused", f"user:{radiologist}", stack.north,
                      north_uid)]


def test_expired_forged_and_session_tokens_are_no_codes(
        stack: EdgeStack, studies: dict[str, Any]) -> None:
    north_uid = studies["north"][1]
    key = session_tokens.read_private_key(stack.data_dir / session_tokens.SIGNING_KEY_FILE)
    claims = {"use": "viewer_code", "study": north_uid, "sid": uuid.uuid4().hex,
              "fac": [stack.north], "fac_all": False}

    def code(signing: Ed25519PrivateKey, now: float) -> str:
        return session_tokens.issue(signing, user_id=str(uuid.uuid4()), username="nobody",
                                    role="radiologist", facilities=[stack.north], ttl_s=60,
                                    now=now, claims=claims)

    expired = _exchange(stack, code(key, time.time() - 120))
    assert expired.status_code == 401 and _reason(expired) == "INVALID_CODE"
    forged = _exchange(stack, code(Ed25519PrivateKey.generate(), time.time()))
    assert forged.status_code == 401 and _reason(forged) == "INVALID_CODE"
    session = _exchange(stack, stack.login())
    assert session.status_code == 401 and _reason(session) == "INVALID_CODE"
    assert _exchange(stack, "not-a-code").status_code == 401


def test_logout_ends_the_viewer_token_and_unspent_codes(
        stack: EdgeStack, studies: dict[str, Any], radiologist: str) -> None:
    north_id, north_uid = studies["north"]
    session = stack.login(radiologist, RADIOLOGIST_PASSWORD)
    first = _code(stack, session, north_id).json()["code"]
    unspent = _code(stack, session, north_id).json()["code"]
    token = _exchange(stack, first).json()["access_token"]
    with _http(stack, token) as http:
        assert http.get(f"/dicomweb/studies/{north_uid}/series").status_code == 200
    with _http(stack, session) as http:
        assert http.post("/api/v1/auth/logout").status_code == 204
    with _http(stack, token) as http:
        gone = http.get(f"/dicomweb/studies/{north_uid}/series")
    assert gone.status_code == 401 and _reason(gone) == "TOKEN_REVOKED"
    refused = _exchange(stack, unspent)
    assert refused.status_code == 401 and _reason(refused) == "INVALID_CODE"


def test_an_admin_token_is_narrowed_to_the_study_facility(
        stack: EdgeStack, studies: dict[str, Any]) -> None:
    south_id, south_uid = studies["south"]
    body = _code(stack, stack.login(), south_id).json()
    viewer = _exchange(stack, body["code"]).json()
    claims = jwt.decode(viewer["access_token"], options={"verify_signature": False})
    assert claims["fac"] == [stack.south] and claims["fac_all"] is False
    with _http(stack, viewer["access_token"]) as http:
        listed = http.get("/dicomweb/studies")
    assert [s["0020000D"]["Value"][0] for s in listed.json()] == [south_uid]
