"""Benchmark: ORU^R01 report completions over MLLP into `sidecar up`, messages per second.

Run: .venv/bin/python -m bench.hl7_mllp [--messages 300] [--stack DATA_DIR] [--smoke]
The measured path is the HL7 listener of `sidecar up` as a user starts it (bench/stack.py, or
the one running on `--stack DATA_DIR`): a facility of this bench (`facility set
--hl7-sending-facility`), its studies seeded ready_for_review in the stack's own database; the
listener stores the raw message, matches the accession to a registered study, moves it to
legacy_report_completed, queues its handoff and writes the audit events, in one transaction per
message, before the ACK. Baseline in the same run: the same MLLP server and framing in this
process with a handler that only parses the message (python-hl7) and builds its ACK, storing
nothing. `--smoke`: 20 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import add_arguments, sidecar_up  # noqa: E402
from sidecar_core.db import Database  # noqa: E402
from sidecar_core.store.models import Facility, Study  # noqa: E402
from workflow_svc.report_loop.hl7.ack import Verdict, acks_for  # noqa: E402
from workflow_svc.report_loop.hl7.message import parse_oru  # noqa: E402
from workflow_svc.report_loop.hl7.mllp import END, START, MllpServer  # noqa: E402


def oru(ris: str, n: int) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|{ris}|SIDECAR|SIDECAR|20240305113005||ORU^R01|B{n}|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||{ris}-{n}^RIS|71250^CT CHEST|||20240305101500|||||||||||||RPT-{n}||"
        "20240305113000|||F",
        "OBX|1|TX|IMP^Impression||No acute findings.||||||F"]) + "\r").encode()


async def send_all(port: int, ris: str, n: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    for i in range(n):
        writer.write(START + oru(ris, i) + END)
        await writer.drain()
        ack = await reader.readuntil(END)
        assert b"MSA|AA|" in ack, ack
    elapsed = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    return elapsed


async def parse_only(message: bytes, _peer: str) -> list[bytes]:
    return acks_for(parse_oru(message).header, Verdict("AA", "parsed"))


async def seed(database_url: str, facility: str, n: int) -> None:
    """N studies of FACILITY, ready for review, accessions {FACILITY}-0..N-1 (upper-cased)."""
    import uuid

    from sqlalchemy import select

    db = Database(database_url)
    async with db.unit_of_work() as s:
        fid = (await s.execute(select(Facility.id).where(Facility.name == facility))).scalar_one()
        for i in range(n):
            s.add(Study(facility_id=fid, accession=f"{facility.upper()}-{i}",
                        ingest_status="complete", study_instance_uid=f"2.25.{uuid.uuid4().int}",
                        state="ready_for_review"))
    await db.close()


async def measure(port: int, baseline: bool, ris: str, n: int) -> float:
    """Messages per second into PORT (or, for the baseline, into a parse-only server here)."""
    if not baseline:
        return n / await send_all(port, ris, n)
    server = MllpServer(parse_only, "127.0.0.1", 0)
    port = await server.start()
    try:
        return n / await send_all(port, ris, n)
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    add_arguments(parser)
    args = parser.parse_args()
    n = 20 if args.smoke else args.messages
    with sidecar_up(args.stack) as stack:
        facility = stack.add_facility("hl7")
        ris = facility.upper()
        stack.cli("facility", "set", facility, "--hl7-sending-facility", ris)
        asyncio.run(seed(stack.runtime()["database_url"], facility, n))
        results = {}
        for label, baseline in (("parse + ACK only (baseline)", True),
                                ("sidecar up: store, match, complete, queue", False)):
            results[label] = asyncio.run(measure(stack.ports["hl7"], baseline, ris, n))
    base = results["parse + ACK only (baseline)"]
    for label, rate in results.items():
        print(f"{label:42s} {rate:8.0f} msg/s  ({rate / base:.2f}x baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
