"""A review gateway on a real WorkflowService + ReviewService (gRPC) and PostgreSQL, seeded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from review_gateway.app import create_app
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security.session_tokens import KeySet
from sidecar_core.security.user_auth import user_authentication
from sidecar_core.serving.grpc_server import GrpcServer
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store import models as m
from tests import pki as test_pki
from tests.integration.test_workflow_queries import PASSWORD, Seeded, seed
from tests.servers import NatsServer
from workflow_svc.identity.sessions import LoginLimits
from workflow_svc.review import servicer as review_servicer
from workflow_svc.study import servicer

SECRET = "review-secret-" + "y" * 40
TOPOLOGY = Topology("revtest", "REVTEST")
# Patient attributes as ingest indexes them (ISO 2022 IR 87: ideographic and phonetic groups).
PATIENT_A = {"PatientName": {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                             "Phonetic": "やまだ^たろう"}, "PatientID": "PID-A1",
             "PatientSex": "M", "PatientAge": "045Y", "PatientBirthDate": "19790214",
             "ReferringPhysicianName": {"Alphabetic": "Sato^Hanako"}, "StudyDate": "20240305",
             "StudyDescription": "CT CHEST", "BodyPartExamined": "CHEST"}
PATIENT_B = {"PatientName": {"Alphabetic": "<img src=x onerror=alert(1)>"}, "PatientID": "PID-B1",
             "StudyDate": "20240306"}


@dataclass
class ReviewEnv:
    http: httpx.AsyncClient
    seeded: Seeded
    server: GrpcServer
    app: FastAPI
    settings: GatewaySettings
    finding_b: uuid.UUID
    sop_a: str = "1.2.3.1.1.2"
    sop_b: str = "1.2.3.4.1.1"

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        reply = await self.http.post("/api/v1/auth/login",
                                     json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    async def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.login(username))['access_token']}"}


async def seed_review(db: Database, store: ObjectStore) -> tuple[Seeded, uuid.UUID]:
    """The query seed plus indexed instances with patient attributes and a finding in fac-b."""
    seeded = await seed(db, store)
    finding_b = uuid.uuid4()
    async with db.unit_of_work() as s:
        series_b = m.Series(id=uuid.uuid4(), study_id=seeded.study_b,
                            series_instance_uid="1.2.3.4.1", modality="CT")
        s.add(series_b)
        await s.flush()
        for study, series, sop in ((seeded.study, seeded.series, "1.2.3.1.1.1"),
                                   (seeded.study, seeded.series, "1.2.3.1.1.2"),
                                   (seeded.study_b, series_b.id, "1.2.3.4.1.1")):
            s.add(m.Instance(study_id=study, series_id=series, sop_instance_uid=sop,
                             sop_class_uid="1.2.840.10008.5.1.4.1.1.2", object_key="x",
                             size_bytes=1, attributes={}))
        for study, attributes in ((seeded.study, PATIENT_A), (seeded.study_b, PATIENT_B)):
            await s.execute(update(m.Study).where(m.Study.id == study)
                            .values(dicom_attributes=attributes))
        run = (await s.scalars(select(m.AiRun.id).limit(1))).one()
        run_b = m.AiRun(id=uuid.uuid4(), study_id=seeded.study_b, series_id=series_b.id,
                        model_name="chest-ct-nodules", model_version="1.0", status="completed")
        s.add(run_b)
        await s.flush()
        s.add(m.Finding(id=finding_b, ai_run_id=run_b.id, study_id=seeded.study_b,
                        model_name="chest-ct-nodules", model_version="1.0", label="nodule",
                        confidence=0.7, kind="box", bbox_px=[1, 2, 3, 4], visible=True,
                        series_instance_uid="1.2.3.4.1", sop_instance_uid="1.2.3.4.1.1"))
        assert run is not None
    return seeded, finding_b


@asynccontextmanager
async def review_env(db: Database, tmp_path: Path, *, nats_url: str = "",
                     limits: LoginLimits | None = None) -> AsyncIterator[ReviewEnv]:
    if nats_url:
        NatsServer.install(tmp_path)  # the gateway's NATS seed and certificate
    store = ObjectStore(tmp_path / "objects", fsync=False)
    seeded, finding_b = await seed_review(db, store)
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"), interceptors=[
        user_authentication(db, TOPOLOGY, "workflow_svc", KeySet(SECRET.encode()), 0)])
    servicer.register(server, db)
    review_servicer.register(server, db, TOPOLOGY, limits, KeySet(SECRET.encode()))
    port = await server.start()
    test_pki.install(tmp_path)
    settings = GatewaySettings(data_dir=tmp_path, object_store_dir=tmp_path / "objects",
                               workflow_address=f"127.0.0.1:{port}", token_secret=SECRET,
                               nats_url=nats_url, subject_prefix=TOPOLOGY.prefix,
                               nats_stream_prefix=TOPOLOGY.stream_prefix, revocation_cache_s=0)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            yield ReviewEnv(http, seeded, server, app, settings, finding_b)
    finally:
        await server.stop(0)
