"""`sidecar demo`: a demo facility and user, the synthetic studies loaded, findings awaited."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists
from sidecar_core.security.mesh_tls import MeshCredentials

FACILITY = "demo"
AE_TITLE = "DEMO"
USER = "demo"
SAMPLES = (("chest-ct", 7), ("mammo", 3), ("brain-mr", 5))


def _samples(root: Path) -> list[Path]:
    from sidecar_synth import generate

    folders = []
    for kind, seed in SAMPLES:
        folder = root / kind
        if not (folder / "ground_truth.json").exists():
            generate(kind, folder, seed)
        folders.append(folder)
    return folders


async def _register(database_url: str, password_file: Path) -> str:
    from sidecar_core.settings import CommonSettings
    from workflow_svc.identity import users
    from workflow_svc.operations import facility_settings

    db = Database(database_url, pool_size=1)
    try:
        with contextlib.suppress(AlreadyExists):
            await facility_settings.save(
                db, CommonSettings().topology(),
                facility_settings.settings_table(CommonSettings().registry().names()), FACILITY,
                {"ae_title": AE_TITLE}, "sidecar demo", True, via="cli")
        if password_file.exists():
            return password_file.read_text().strip()
        password = secrets.token_urlsafe(12)
        try:
            await users.add_user(db, USER, password, "admin")
        except AlreadyExists:
            return "(unchanged: see an earlier run)"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        return password
    finally:
        await db.close()


async def _ingest(address: str, folder: Path, credentials: MeshCredentials
                  ) -> tuple[int, str]:
    files = sorted(p for p in folder.rglob("*.dcm"))
    async with credentials.aio_channel(address) as channel:
        stub = pb_grpc.IngestServiceStub(channel)
        reqs = [
            pb.UploadInstancesRequest(facility=FACILITY, dicom=p.read_bytes(), source_ref=p.name)
            for p in files
        ]
        resp = await stub.UploadInstances(iter(reqs))
        uid = next((r.study_instance_uid for r in resp.results if r.study_instance_uid), "")
        if uid:
            await stub.CompleteStudy(
                pb.CompleteStudyRequest(facility=FACILITY, study_instance_uid=uid)
            )
    return resp.stored_count + resp.duplicate_count, uid


async def _wait_states(database_url: str, uids: list[str], timeout: float) -> dict[str, Any]:
    import psycopg

    deadline = time.monotonic() + timeout
    final = {"ready_for_review", "ai_failed", "ineligible", "preprocess_failed"}
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "select s.study_instance_uid, s.state, s.modality, "
                "(select count(*) from findings f where f.study_id = s.id) "
                "from studies s where s.study_instance_uid = any(%s)",
                (uids,),
            )
            states = {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}
        if len(states) == len(uids) and all(v[0] in final for v in states.values()):
            break
        await asyncio.sleep(0.5)
    return states


def load_demo(mesh: Any) -> None:
    """after_ready hook of `sidecar demo`."""
    env = mesh.env
    password = asyncio.run(
        _register(env["SIDECAR_DATABASE_URL"], mesh.data_dir / "demo-password.txt")
    )
    uids = []
    for folder in _samples(mesh.data_dir / "samples"):
        n, uid = asyncio.run(_ingest(env["SIDECAR_INGEST_ADDRESS"], folder, mesh.operator))
        print(f"loaded {folder.name}: {n} instances (study {uid})", flush=True)
        uids.append(uid)
    states = asyncio.run(_wait_states(env["SIDECAR_DATABASE_URL"], uids, 300))
    for uid, (state, modality, findings) in states.items():
        print(f"  {modality} study {uid}: {state}, {findings} findings", flush=True)
    print(
        f"Log in as '{USER}' with password '{password}' "
        f"(POST /api/v1/auth/login); stored in {mesh.data_dir / 'demo-password.txt'}",
        flush=True,
    )
