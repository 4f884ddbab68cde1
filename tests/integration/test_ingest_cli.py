"""`sidecar ingest` over DIMSE, gRPC and STOW-RS against the running ingest service."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydicom.uid import generate_uid

from review_gateway.auth import tokens
from sidecar_app import cli
from sidecar_app import ingest_cli as client_cli
from sidecar_core.db import Database
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.integration.test_dicomweb import KEY, make_app, serve
from tests.integration.test_dimse import Ingest, running_ingest

pytestmark = pytest.mark.integration
FACILITY, AE_TITLE = "clinic", "CLINIC_PACS"


class Login(BaseModel):
    username: str
    password: str


@pytest.fixture()
async def ingest(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Ingest]:
    add_facility(database_url, FACILITY, ae_title=AE_TITLE, quiet_period_s=3600)
    async with running_ingest(database_url, nats, tmp_path / "svc",
                              token_secret=KEY.decode()) as svc:
        yield svc


def study_folder(root: Path, n: int = 3) -> tuple[Path, str]:
    """n CT slices in a nested folder plus one file that is not DICOM."""
    study = generate_uid()
    (root / "series1" / "deeper").mkdir(parents=True)
    for z in range(n):
        sub = root / "series1" / ("deeper" if z % 2 else "")
        (sub / f"slice{z}.dcm").write_bytes(to_bytes(ct_slice(study, z=float(z))))
    (root / "notes.txt").write_text("not an image")
    return root, study


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, ["ingest", *argv, "--credentials",
                                              str(test_pki.folder())])


async def test_dimse_then_grpc_resend(ingest: Ingest, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder, study = study_folder(tmp_path / "in")
    # In the folder scan the text file is skipped; named explicitly it is sent and refused.
    rc = await run_cli(str(folder), str(folder / "notes.txt"), "--facility", FACILITY,
                       "--via", "dimse", "--target",
                       f"127.0.0.1:{ingest.dicom_port}", "--database-url", ingest.database_url,
                       "--complete", "--ingest-address", f"127.0.0.1:{ingest.grpc_port}")
    out, err = capsys.readouterr()
    assert rc == 1  # the text file was refused
    assert "4 files" in out and "3 stored, 0 duplicate, 1 rejected" in out
    assert "1 non-DICOM files in folders skipped" in out
    assert "notes.txt" in err and "0xC000" in err
    assert f"study {study}: completed" in out
    with psycopg.connect(ingest.database_url) as conn:
        assert conn.execute("select instance_count, ingest_status from studies").fetchall() \
            == [(3, "complete")]
    slices = [str(p) for p in sorted(folder.rglob("*.dcm"))]
    rc = await run_cli(*slices, "--facility", FACILITY, "--via", "grpc", "--target",
                       f"127.0.0.1:{ingest.grpc_port}")
    out, _ = capsys.readouterr()
    assert rc == 0 and "3 files" in out and "0 stored, 3 duplicate, 0 rejected" in out


async def test_dimse_errors_exit_2(ingest: Ingest, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = study_folder(tmp_path / "in", n=1)
    rc = await run_cli(str(folder), "--facility", FACILITY, "--via", "dimse",
                       "--calling-ae", "STRANGER", "--target", f"127.0.0.1:{ingest.dicom_port}")
    _, err = capsys.readouterr()
    assert rc == 2 and "calling ae title not recognised" in err.lower()
    assert await run_cli(str(tmp_path / "missing"), "--facility", FACILITY) == 2


async def test_stow_with_login(ingest: Ingest, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow_svc.identity import users

    db = Database(ingest.database_url)
    await users.add_user(db, "rad", "s3cret-pass", "radiologist", FACILITY)
    app = make_app(ingest.grpc_port)

    @app.post("/api/v1/auth/login")
    async def login(body: Login) -> dict[str, Any]:  # the gateway's login, minus gRPC
        user = await users.authenticate(db, body.username, body.password)
        return {"access_token": tokens.issue(KEY, user_id=str(user.user_id),
                                           username=user.username, role=user.role,
                                           facilities=list(user.facilities), ttl_s=600)}

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=401)

    folder, _ = study_folder(tmp_path / "in", n=2)
    try:
        with serve(app) as url:
            monkeypatch.setenv("SIDECAR_PASSWORD", "s3cret-pass")
            rc = await run_cli(str(folder), str(folder / "notes.txt"), "--facility", FACILITY,
                               "--via", "stow", "--url", f"{url}/dicomweb", "--username", "rad")
            out, err = capsys.readouterr()
            assert rc == 1 and "2 stored, 0 duplicate, 1 rejected" in out, (out, err)
            monkeypatch.setenv("SIDECAR_PASSWORD", "wrong")
            assert await run_cli(str(folder), "--facility", FACILITY, "--via", "stow",
                                 "--url", f"{url}/dicomweb", "--username", "rad") != 0
    finally:
        await db.close()


def test_progress_bar_on_a_terminal_only() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tally = client_cli.Tally(files=5, bytes=5_000_000)
    tty, pipe = Tty(), io.StringIO()
    for out in (tty, pipe):
        bar = client_cli.Progress(10, out)
        bar.update(tally)
        bar.close()
    assert "5/10 files" in tty.getvalue() and "MB/s" in tty.getvalue()
    assert pipe.getvalue() == ""
