"""Worklist query cost on a store of many studies: ReviewService.ListWorklist, one page.

Usage: .venv/bin/python bench/review_worklist.py [--studies 1000] [--repeats 30]

Seeds a fresh embedded PostgreSQL (migrated) with `--studies` studies over two facilities, each
with patient attributes, one series and 0–5 AI findings, serves ReviewService on a loopback
gRPC port, and times one page of 50 rows over gRPC, median of `--repeats`: ListWorklist as an
admin with the default sort, sorted by highest confidence, filtered by AI status, and as a
radiologist of one facility. (The plain WorkflowService.ListStudies baseline of the first runs
is gone with that RPC, contracts release 2.)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb  # noqa: E402
from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rpb_grpc  # noqa: E402
from sidecar_core.db import Database  # noqa: E402
from sidecar_core.messaging.subjects import Topology  # noqa: E402
from sidecar_core.serving.grpc_server import GrpcServer  # noqa: E402
from sidecar_core.store import models as m  # noqa: E402
from sidecar_core.store.migrate import upgrade  # noqa: E402
from tests.servers import fresh_database, postgres_server  # noqa: E402
from workflow_svc.review import servicer as review_servicer

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def seed(db: Database, count: int) -> None:
    rng = random.Random(7)
    facilities = [uuid.uuid4(), uuid.uuid4()]
    studies: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for i in range(count):
        sid, ser, run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        done = rng.random() < 0.8
        studies.append({
            "id": sid, "facility_id": facilities[i % 2], "accession": f"A{i:06d}",
            "study_instance_uid": f"1.2.826.0.1.{i}", "modality": "CT",
            "state": "ready_for_review" if done else "processed", "eligible": True,
            "ai_status": "completed" if done else "running", "created_at": T0 + timedelta(
                minutes=i), "dicom_attributes": {
                "PatientName": {"Alphabetic": f"Patient^{i}", "Ideographic": "山田^太郎"},
                "PatientID": f"P{i}", "StudyDate": (T0 + timedelta(days=i % 365)).strftime(
                    "%Y%m%d"), "PatientSex": "F"}})
        series.append({"id": ser, "study_id": sid, "series_instance_uid": f"1.2.826.0.1.{i}.1",
                       "modality": "CT", "body_part": "CHEST"})
        runs.append({"id": run, "study_id": sid, "series_id": ser, "model_name": "chest",
                     "model_version": "1", "status": "completed"})
        for _ in range(rng.randint(0, 5) if done else 0):
            findings.append({"id": uuid.uuid4(), "ai_run_id": run, "study_id": sid,
                             "model_name": "chest", "model_version": "1", "label": "nodule",
                             "confidence": rng.random(), "kind": "box",
                             "bbox_px": [1, 2, 3, 4]})
    async with db.unit_of_work() as s:
        for n, fid in enumerate(facilities):
            await s.execute(insert(m.Facility).values(id=fid, name=f"bench-{n}"))
        for model, rows in ((m.Study, studies), (m.Series, series), (m.AiRun, runs),
                            (m.Finding, findings)):
            for start in range(0, len(rows), 1000):
                await s.execute(insert(model), rows[start:start + 1000])


async def timed(call: Any, request: Any, repeats: int) -> float:
    await call(request)  # warm
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        reply = await call(request)
        samples.append(time.perf_counter() - started)
    assert len(reply.studies) == 50, len(reply.studies)
    return statistics.median(samples) * 1000


async def main(studies: int, repeats: int) -> None:
    with postgres_server() as admin_url, fresh_database(admin_url) as url:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        db = Database(url)
        await seed(db, studies)
        server = GrpcServer("127.0.0.1:0")
        review_servicer.register(server, db, Topology())
        port = await server.start()
        admin = rpb.Caller(username="admin", role="admin")
        rad = rpb.Caller(username="rad", role="radiologist", facilities=["bench-0"])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                worklist = rpb_grpc.ReviewServiceStub(channel).ListWorklist
                results = []
                for name, request in [
                    ("ListWorklist (received, newest)", rpb.ListWorklistRequest(
                        caller=admin, page_size=50)),
                    ("ListWorklist sort=-max_confidence", rpb.ListWorklistRequest(
                        caller=admin, page_size=50, sort="-max_confidence")),
                    ("ListWorklist ai_status=findings", rpb.ListWorklistRequest(
                        caller=admin, page_size=50, ai_status="findings")),
                    ("ListWorklist as a radiologist", rpb.ListWorklistRequest(
                        caller=rad, page_size=50)),
                ]:
                    results.append((name, await timed(worklist, request, repeats)))
                print(f"{studies} studies, page of 50, median of {repeats}:")
                for name, ms in results:
                    print(f"  {name:33s} {ms:7.1f} ms")
        finally:
            await server.stop(0)
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.studies, args.repeats))
