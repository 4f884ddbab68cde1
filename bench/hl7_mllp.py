"""Benchmark: ORU^R01 report completions over MLLP into the workflow store, messages per second.

Run: .venv/bin/python -m bench.hl7_mllp [--messages 300]
Baseline in the same run: the same MLLP server and framing with a handler that only parses the
message (python-hl7) and builds its ACK, storing nothing. The measured path stores the raw
message, matches the accession to a registered study, moves it to legacy_report_completed,
queues its handoff and writes the audit events, in one transaction per message, before the ACK.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar_core.db import Database  # noqa: E402
from sidecar_core.messaging.subjects import Topology  # noqa: E402
from sidecar_core.store.migrate import upgrade  # noqa: E402
from sidecar_core.store.models import Facility, Study  # noqa: E402
from tests.servers import fresh_database, postgres_server  # noqa: E402
from workflow_svc.report_loop.hl7.ack import Verdict, acks_for  # noqa: E402
from workflow_svc.report_loop.hl7.main import make_handler  # noqa: E402
from workflow_svc.report_loop.hl7.message import parse_oru  # noqa: E402
from workflow_svc.report_loop.hl7.mllp import END, START, MllpServer  # noqa: E402


def oru(n: int) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|BENCH_RIS|SIDECAR|SIDECAR|20240305113005||ORU^R01|B{n}|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||ACC-{n}^RIS|71250^CT CHEST|||20240305101500|||||||||||||RPT-{n}||"
        "20240305113000|||F",
        "OBX|1|TX|IMP^Impression||No acute findings.||||||F"]) + "\r").encode()


async def send_all(port: int, n: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    for i in range(n):
        writer.write(START + oru(i) + END)
        await writer.drain()
        ack = await reader.readuntil(END)
        assert b"MSA|AA|" in ack, ack
    elapsed = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    return elapsed


async def parse_only(message: bytes, _peer: str) -> list[bytes]:
    return acks_for(parse_oru(message).header, Verdict("AA", "parsed"))


async def run(n: int) -> None:
    with postgres_server() as admin, fresh_database(admin) as url:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        db = Database(url)
        async with db.unit_of_work() as s:
            fid = uuid.uuid4()
            s.add(Facility(id=fid, name="bench", hl7_sending_facility="BENCH_RIS"))
            await s.flush()
            for i in range(n):
                s.add(Study(facility_id=fid, accession=f"ACC-{i}", ingest_status="complete",
                            study_instance_uid=f"1.2.3.{i}", state="ready_for_review"))
        results = {}
        for label, handler in (("parse + ACK only (baseline)", parse_only),
                               ("store, match, complete, queue handoff",
                                make_handler(db, Topology("bench", "BENCH")))):
            server = MllpServer(handler, "127.0.0.1", 0)
            port = await server.start()
            results[label] = n / await send_all(port, n)
            await server.stop()
        await db.close()
    base = results["parse + ACK only (baseline)"]
    for label, rate in results.items():
        print(f"{label:40s} {rate:8.0f} msg/s  ({rate / base:.2f}x baseline)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    asyncio.run(run(parser.parse_args().messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
