"""Benchmark: ORU^R01 report completions over MLLP into `sidecar up`, messages per second.

Run: .venv/bin/python -m bench.hl7_mllp [--messages 300] [--repeat 3] [--stack DATA_DIR] [--smoke]
The measured path is the HL7 listener of `sidecar up` as a user starts it (bench/stack.py, or
the one running on `--stack DATA_DIR`): a facility of this bench (`facility set
--hl7-sending-facility`), its studies seeded ready_for_review in the stack's own database; the
listener stores the raw message, matches the accession to a registered study, moves it to
legacy_report_completed, queues its handoff and writes the audit events, in one transaction per
message, before the ACK. Baseline in the same run: the same MLLP server and framing in this
process with a handler that only parses the message (python-hl7) and builds its ACK, storing
nothing. `--smoke`: 20 messages. After each product round: the listener's mean time per stage
(its `sidecar_hl7_stage_seconds` histogram) and each process's CPU ms per message; then the
bench waits for the work each message set off (its handoff, the outbox relayed) and prints the
CPU again with it, so that no round pays for the one before.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import add_arguments, print_breakdown, sidecar_up  # noqa: E402
from sidecar_core.db import Database  # noqa: E402
from sidecar_core.store.models import Facility, Study  # noqa: E402
from workflow_svc.report_loop.hl7.ack import Verdict, acks_for  # noqa: E402
from workflow_svc.report_loop.hl7.message import parse_oru  # noqa: E402
from workflow_svc.report_loop.hl7.mllp import END, START, MllpServer  # noqa: E402

STAGES = "sidecar_hl7_stage_seconds"


def oru(ris: str, n: int) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|{ris}|SIDECAR|SIDECAR|20240305113005||ORU^R01|B{n}|P|2.5.1",
        "PID|1||MRN-1^^^HOSP^MR||Doe^Jane",
        f"OBR|1||{ris}-{n}^RIS|71250^CT CHEST|||20240305101500|||||||||||||RPT-{n}||"
        "20240305113000|||F",
        "OBX|1|TX|IMP^Impression||No acute findings.||||||F"]) + "\r").encode()


async def send_all(port: int, ris: str, n: int, first: int = 0) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    for i in range(first, first + n):
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


async def settle(database_url: str, facility: str, done: int, timeout_s: float = 300.0) -> float:
    """Seconds until DONE studies of FACILITY have their handoff recorded (the workflow's
    handoff job, set off by each message, has run) and the outbox is relayed: the work the
    messages left to the other processes, which must not spill into the next round."""
    from sqlalchemy import text

    db = Database(database_url)
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < timeout_s:
            async with db.read() as s:
                left = (await s.execute(text(
                    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL), "
                    "(SELECT count(*) FROM studies s JOIN facilities f ON f.id = s.facility_id"
                    " WHERE f.name = :f AND s.state = 'status_recorded')"), {"f": facility})
                ).one()
            if left[0] == 0 and left[1] >= done:
                break
            await asyncio.sleep(0.05)
    finally:
        await db.close()
    return time.perf_counter() - t0


async def measure(port: int, baseline: bool, ris: str, n: int, first: int = 0) -> float:
    """Seconds to send N messages into PORT, one at a time, each waiting for its ACK (or, for
    the baseline, into a parse-only server here)."""
    if not baseline:
        return await send_all(port, ris, n, first)
    server = MllpServer(parse_only, "127.0.0.1", 0)
    port = await server.start()
    try:
        return await send_all(port, ris, n, first)
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, each the baseline then the product (medians printed)")
    add_arguments(parser)
    args = parser.parse_args()
    n = 20 if args.smoke else args.messages
    rounds = 1 if args.smoke else max(1, args.repeat)
    labels = ("parse + ACK only (baseline)", "sidecar up: store, match, complete, queue")
    rates: dict[str, list[float]] = {label: [] for label in labels}
    with sidecar_up(args.stack) as stack:
        facility = stack.add_facility("hl7")
        ris = facility.upper()
        stack.cli("facility", "set", facility, "--hl7-sending-facility", ris)
        asyncio.run(seed(stack.runtime()["database_url"], facility, n * rounds))
        for r in range(rounds):
            for label, baseline in zip(labels, (True, False), strict=True):
                if baseline:
                    rates[label].append(n / asyncio.run(
                        measure(stack.ports["hl7"], True, ris, n, r * n)))
                    continue
                # where the product's time went: the listener's stages and each process's CPU
                stages0, cpu0 = stack.stage_seconds("hl7", STAGES), stack.cpu_seconds()
                took = asyncio.run(measure(stack.ports["hl7"], False, ris, n, r * n))
                rates[label].append(n / took)
                print_breakdown(f"round {r + 1}", n,
                                (cpu0, stack.cpu_seconds()),
                                (stages0, stack.stage_seconds("hl7", STAGES)), took)
                later = asyncio.run(settle(stack.runtime()["database_url"], facility,
                                           (r + 1) * n))
                print(f"  round {r + 1}: the handoffs and the outbox done {later:.1f} s after "
                      f"the last ACK; CPU with them:")
                print_breakdown(f"round {r + 1} + downstream", n,
                                (cpu0, stack.cpu_seconds()), wall_s=took + later)
    base = statistics.median(rates[labels[0]])
    for label in labels:
        got = rates[label]
        spread = f" ({min(got):.0f}-{max(got):.0f})" if len(got) > 1 else ""
        print(f"{label:42s} {statistics.median(got):8.0f} msg/s{spread}  "
              f"({statistics.median(got) / base:.3f}x baseline)")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
