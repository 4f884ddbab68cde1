"""Worklist query cost on a store of many studies: ReviewService.ListWorklist, one page.

Usage: .venv/bin/python bench/review_worklist.py [--studies 1000] [--repeats 30]
       [--stack DATA_DIR] [--smoke]

Starts `sidecar up` as a user does (bench/stack.py; or uses the one running on `--stack
DATA_DIR`), adds two facilities of this bench, seeds the stack's own database with `--studies`
studies over them, each with patient attributes, one series and 0–5 AI findings, and times one
page of 50 rows from the stack's workflow service (its gRPC port), median of `--repeats`:
ListWorklist as an admin with the default sort, sorted by highest confidence, filtered by AI
status, and as a radiologist of one facility, each against the first (newest first, no filter)
as the baseline. (The plain WorkflowService.ListStudies baseline of the first runs is gone with
that RPC, contracts release 2.) On a shared
stack, the admin's lists also hold the other benches' studies. `--smoke`: 150 studies, 3
repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import add_arguments, sidecar_up  # noqa: E402
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb  # noqa: E402
from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rpb_grpc  # noqa: E402
from sidecar_core.db import Database  # noqa: E402
from sidecar_core.security import session_tokens
from sidecar_core.security.mesh_tls import TLS_DIR, from_folder  # noqa: E402  # noqa: E402
from sidecar_core.store import models as m  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def seed(db: Database, count: int, names: list[str]) -> None:
    from sqlalchemy import select

    rng = random.Random(7)
    async with db.unit_of_work() as s:
        facilities = [(await s.execute(select(m.Facility.id).where(m.Facility.name == n)))
                      .scalar_one() for n in names]
    studies: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for i in range(count):
        sid, ser, run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        done = rng.random() < 0.8
        studies.append({
            "id": sid, "facility_id": facilities[i % 2], "accession": f"A{i:06d}",
            "study_instance_uid": f"2.25.{sid.int}", "modality": "CT",
            "state": "ready_for_review" if done else "processed", "eligible": True,
            "ai_status": "completed" if done else "running", "created_at": T0 + timedelta(
                minutes=i), "dicom_attributes": {
                "PatientName": {"Alphabetic": f"Patient^{i}", "Ideographic": "山田^太郎"},
                "PatientID": f"P{i}", "StudyDate": (T0 + timedelta(days=i % 365)).strftime(
                    "%Y%m%d"), "PatientSex": "F"}})
        series.append({"id": ser, "study_id": sid, "series_instance_uid": f"2.25.{ser.int}",
                       "modality": "CT", "body_part": "CHEST"})
        runs.append({"id": run, "study_id": sid, "series_id": ser, "model_name": "chest",
                     "model_version": "1", "status": "completed"})
        for _ in range(rng.randint(0, 5) if done else 0):
            findings.append({"id": uuid.uuid4(), "ai_run_id": run, "study_id": sid,
                             "model_name": "chest", "model_version": "1", "label": "nodule",
                             "confidence": rng.random(), "kind": "box",
                             "bbox_px": [1, 2, 3, 4]})
    async with db.unit_of_work() as s:
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


async def measure(database_url: str, address: str, names: list[str], studies: int,
                  repeats: int, data_dir: Path) -> None:
    db = Database(database_url)
    try:
        await seed(db, studies, names)
    finally:
        await db.close()
    # The users' session tokens, signed with the stack's token key (as its gateway would).
    keys = session_tokens.load_signing_key_set(data_dir)
    admin = session_tokens.metadata(session_tokens.issue(
        keys, user_id=str(uuid.uuid4()), username="admin", role="admin", facilities=[],
        ttl_s=3600))
    rad = session_tokens.metadata(session_tokens.issue(
        keys, user_id=str(uuid.uuid4()), username="rad", role="radiologist",
        facilities=[names[0]], ttl_s=3600))
    # The gateway's mesh certificate: only the gateway may call ReviewService.
    gateway = from_folder(data_dir / TLS_DIR, "gateway")
    async with gateway.aio_channel(address) as channel:
        worklist = rpb_grpc.ReviewServiceStub(channel).ListWorklist
        results = []
        for name, user, request in [
            ("ListWorklist (received, newest)", admin, rpb.ListWorklistRequest(page_size=50)),
            ("ListWorklist sort=-max_confidence", admin, rpb.ListWorklistRequest(
                page_size=50, sort="-max_confidence")),
            ("ListWorklist ai_status=findings", admin, rpb.ListWorklistRequest(
                page_size=50, ai_status="findings")),
            ("ListWorklist as a radiologist", rad, rpb.ListWorklistRequest(page_size=50)),
        ]:
            results.append((name, await timed(functools.partial(worklist, metadata=user),
                                              request, repeats)))
    # The baseline: the worklist's plainest page (newest first, no filter), measured in this run.
    base = results[0][1]
    print(f"{studies} studies, page of 50, median of {repeats} "
          f"(baseline: {results[0][0]}):")
    for name, ms in results:
        print(f"  {name:33s} {ms:7.1f} ms  ({ms / base:.1f}x baseline)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    add_arguments(parser)
    args = parser.parse_args()
    if args.smoke:
        args.studies, args.repeats = 150, 3  # a full page of 50 in every list
    with sidecar_up(args.stack) as stack:
        names = [stack.add_facility("worklist"), stack.add_facility("worklist")]
        asyncio.run(measure(stack.runtime()["database_url"], stack.address("workflow"), names,
                            args.studies, args.repeats, stack.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
