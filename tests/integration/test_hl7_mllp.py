"""ORU^R01 over real MLLP sockets into a real PostgreSQL: matching, NAKs, framing, repeats."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from protos.sidecar.events.v1 import events_pb2
from sidecar_core.db import Database
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import STUDY_RECEIVED, Topology
from sidecar_core.registry import load_registry
from sidecar_core.secret_box import SecretBox
from sidecar_core.store.models import Facility, Study
from workflow_svc.report_loop.hl7.main import make_handler
from workflow_svc.report_loop.hl7.mllp import END, START, MllpServer
from workflow_svc.report_loop.legacy_reports import match_waiting_reports
from workflow_svc.report_loop.report_text import open_message
from workflow_svc.study.pipeline import Pipeline

pytestmark = pytest.mark.integration
TOPOLOGY = Topology("hl7test", "HL7TEST")
SENDER = "RIS_NORTH"
BOX = SecretBox(os.urandom(32))


def oru(control_id: str, accession: str = "ACC-1", status: str = "F", *,
        version: str = "2.5.1", facility: str = SENDER, msh15: str = "", msh16: str = "",
        obr3: str | None = None, obr7: str = "20240305101500",
        obr22: str = "20240305113000", message_type: str = "ORU^R01^ORU_R01") -> bytes:
    """An ORU^R01 as a RIS sends it: accession in OBR-3 unless told otherwise."""
    filler = accession if obr3 is None else obr3
    segments = [
        f"MSH|^~\\&|RIS|{facility}|SIDECAR|SIDECAR|20240305113005||{message_type}|"
        f"{control_id}|P|{version}|||{msh15}|{msh16}",
        "PID|1||MRN123^^^HOSP^MR||Doe^Jane||19600101|F",
        f"ORC|RE|PLACER-{accession}|{filler}",
        f"OBR|1|PLACER-{accession}|{filler}^RIS|71250^CT CHEST^C4|||{obr7}|||||||||||||"
        f"RPT-{accession}||{obr22}|||{status}",
        "OBX|1|TX|IMP^Impression||No acute findings.||||||F",
    ]
    return "\r".join(segments).encode() + b"\r"


@dataclass
class Peer:
    port: int

    async def send(self, message: bytes, chunks: int = 1, expect: int = 1) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            framed = START + message + END
            step = max(1, len(framed) // chunks)
            for i in range(0, len(framed), step):
                writer.write(framed[i:i + step])
                await writer.drain()
                await asyncio.sleep(0.01)
            return [await _read_frame(reader) for _ in range(expect)]
        finally:
            writer.close()
            await writer.wait_closed()


async def _read_frame(reader: asyncio.StreamReader) -> str:
    data = await asyncio.wait_for(reader.readuntil(END), 20)
    assert data.startswith(START)
    return data[1:-2].decode()


def msa(ack: str) -> list[str]:
    return next(seg for seg in ack.split("\r") if seg.startswith("MSA")).split("|")


def err(ack: str) -> str:
    return next((seg for seg in ack.split("\r") if seg.startswith("ERR")), "")


@pytest.fixture()
async def store(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    async with db.unit_of_work() as s:
        s.add(Facility(id=uuid.uuid4(), name="north", hl7_sending_facility=SENDER))
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture()
async def peer(store: Database) -> AsyncIterator[Peer]:
    server = MllpServer(make_handler(store, TOPOLOGY, BOX), "127.0.0.1", 0)
    port = await server.start()
    try:
        yield Peer(port)
    finally:
        await server.stop()


async def add_study(db: Database, accession: str, state: str | None = "ready_for_review"
                    ) -> uuid.UUID:
    async with db.unit_of_work() as s:
        fid = (await s.execute(text("select id from facilities where name='north'"))).scalar()
        study = Study(id=uuid.uuid4(), facility_id=fid, accession=accession,
                      study_instance_uid=f"1.2.826.0.1.{uuid.uuid4().int % 10**12}",
                      state=state, ingest_status="complete")
        s.add(study)
    return study.id


async def rows(db: Database, sql: str, **params: object) -> list[dict]:
    async with db.read() as s:
        return [dict(r._mapping) for r in (await s.execute(text(sql), params)).all()]


async def kept_messages(db: Database) -> list[dict]:
    """hl7_messages as kept, each with `raw` opened: sealed at rest, exact when opened."""
    out = []
    for row in await rows(db, "select id, raw, status, ack_code from hl7_messages "
                              "order by received_at"):
        sealed, message_id = bytes(row.pop("raw")), row.pop("id")
        assert sealed.startswith(b"sealed:v1:") and b"MSH" not in sealed
        out.append({**row, "raw": open_message(BOX, message_id, sealed)})
    return out


async def test_matched_report_completes_the_study(store: Database, peer: Peer) -> None:
    study_id = await add_study(store, "ACC-1")
    [ack] = await peer.send(oru("MSG-1"))
    assert msa(ack)[1:3] == ["AA", "MSG-1"]
    [study] = await rows(store, "select state, handoff_status from studies where id=:i",
                         i=study_id)
    assert study == {"state": "legacy_report_completed", "handoff_status": "pending"}
    [report] = await rows(store, "select * from legacy_reports")
    assert report["study_id"] == study_id and report["result_status"] == "F"
    assert report["report_reference"] == "RPT-ACC-1" and report["matched_by"] == "message"
    assert report["completed_at"].isoformat() == "2024-03-05T11:30:00+00:00"
    assert report["observed_at"].isoformat() == "2024-03-05T10:15:00+00:00"
    [raw] = await kept_messages(store)
    assert raw == {"raw": oru("MSG-1"), "status": "accepted", "ack_code": "AA"}
    types = [r["type"] for r in await rows(store, "select type from audit_events order by seq")]
    assert "legacy_report.completed" in types
    jobs = await rows(store, "select subject from outbox where subject like '%job.v1.handoff'")
    assert len(jobs) == 1


async def test_unmatched_then_matched_when_the_study_arrives(store: Database, peer: Peer) -> None:
    [ack] = await peer.send(oru("MSG-2", "ACC-LATE"))
    assert msa(ack)[1] == "AA"
    [report] = await rows(store, "select study_id from legacy_reports")
    assert report["study_id"] is None
    assert await rows(store, "select id from audit_events where type='legacy_report.unmatched'")
    # the study arrives: registered by the real workflow pipeline
    study_id = await add_study(store, "ACC-LATE", state=None)
    pipeline = Pipeline(store, TOPOLOGY, load_registry(),
                        after_registered=[match_waiting_reports])
    event = events_pb2.StudyReceived(study_id=str(study_id))
    await pipeline.handle(Delivery(f"hl7test.{STUDY_RECEIVED}", event.SerializeToString(), 1,
                                   "m-late", 5))
    history = [r["to_state"] for r in await rows(
        store, "select to_state from state_transitions where study_id=:i order by id",
        i=study_id)]
    assert history[-1] == "legacy_report_completed" and history[0] == "received"
    [report] = await rows(store, "select study_id, matched_by from legacy_reports")
    assert report == {"study_id": study_id, "matched_by": "study_arrival"}


async def test_resent_message_changes_nothing(store: Database, peer: Peer) -> None:
    await add_study(store, "ACC-1")
    [first] = await peer.send(oru("MSG-3"))
    before = await rows(store, "select count(*) as n from state_transitions")
    [again] = await peer.send(oru("MSG-3"))
    assert msa(first)[1] == msa(again)[1] == "AA"
    assert "duplicate" in msa(again)[3]
    assert len(await rows(store, "select id from legacy_reports")) == 1
    assert len(await rows(store, "select id from hl7_messages")) == 1
    assert await rows(store, "select count(*) as n from state_transitions") == before


@pytest.mark.parametrize(("message", "code", "location"), [
    (oru("BAD-1", status=""), "AE", "OBR^1^25"),
    (oru("BAD-2", status="X"), "AE", "OBR^1^25"),
    (oru("BAD-3", obr3="").replace(b"PLACER-ACC-1", b""), "AE", "OBR^1^3"),
    (oru("BAD-4", version="2.7"), "AR", "MSH^1^12"),
    (oru("BAD-5", message_type="ADT^A01"), "AR", "MSH^1^9"),
    (oru("BAD-6", obr22="2024-03-05"), "AE", "OBR^1^22"),
    (oru("BAD-7", facility="UNKNOWN_RIS"), "AE", "MSH^1^4"),
])
async def test_malformed_message_is_refused_naming_the_field(
        store: Database, peer: Peer, message: bytes, code: str, location: str) -> None:
    [ack] = await peer.send(message)
    assert msa(ack)[1] == code, ack
    assert location in err(ack), ack
    [kept] = await kept_messages(store)
    assert kept == {"raw": message, "status": "rejected", "ack_code": code}  # nothing lost
    assert await rows(store, "select id from audit_events where type='hl7.message_rejected'")


async def test_version_23_gets_err1(store: Database, peer: Peer) -> None:
    [ack] = await peer.send(oru("OLD-1", status="Q", version="2.3"))
    assert msa(ack)[1] == "AE"
    assert err(ack).startswith("ERR|OBR^1^25^^103&"), ack


async def test_not_hl7_at_all_is_rejected_and_kept(store: Database, peer: Peer) -> None:
    [ack] = await peer.send(b"hello, this is not HL7")
    assert msa(ack)[1] == "AR" and "MSH" in err(ack)
    [kept] = await kept_messages(store)
    assert kept["raw"] == b"hello, this is not HL7"


async def test_message_split_across_tcp_reads(store: Database, peer: Peer) -> None:
    study_id = await add_study(store, "ACC-SPLIT")
    [ack] = await peer.send(oru("SPLIT-1", "ACC-SPLIT"), chunks=7)
    assert msa(ack)[1] == "AA"
    [study] = await rows(store, "select state from studies where id=:i", i=study_id)
    assert study["state"] == "legacy_report_completed"


async def test_two_connections_at_once(store: Database, peer: Peer) -> None:
    a, b = await add_study(store, "ACC-A"), await add_study(store, "ACC-B")
    acks = await asyncio.gather(peer.send(oru("PAR-A", "ACC-A"), chunks=3),
                                peer.send(oru("PAR-B", "ACC-B"), chunks=3),
                                peer.send(oru("PAR-A", "ACC-A"), chunks=2))
    assert [msa(x[0])[1] for x in acks] == ["AA", "AA", "AA"]
    states = await rows(store, "select state from studies where id in (:a, :b)", a=a, b=b)
    assert {s["state"] for s in states} == {"legacy_report_completed"}
    assert len(await rows(store, "select id from legacy_reports")) == 2


async def test_enhanced_mode_commit_then_application_ack(store: Database, peer: Peer) -> None:
    await add_study(store, "ACC-E")
    acks = await peer.send(oru("ENH-1", "ACC-E", msh15="AL", msh16="AL"), expect=2)
    assert [msa(a)[1] for a in acks] == ["CA", "AA"]
    # only errors acknowledged at the application level: a success gets the commit ACK only
    [only] = await peer.send(oru("ENH-2", "ACC-E", msh15="AL", msh16="ER"))
    assert msa(only)[1] == "CA"
    rejected = await peer.send(oru("ENH-3", version="9.9", msh15="AL", msh16="AL"))
    assert [msa(a)[1] for a in rejected] == ["CR"] and "MSH^1^12" in err(rejected[0])


async def test_preliminary_report_is_recorded_without_completing(
        store: Database, peer: Peer) -> None:
    study_id = await add_study(store, "ACC-P")
    [ack] = await peer.send(oru("PRE-1", "ACC-P", status="P"))
    assert msa(ack)[1] == "AA"
    [study] = await rows(store, "select state from studies where id=:i", i=study_id)
    assert study["state"] == "ready_for_review"
    [report] = await rows(store, "select result_status, study_id from legacy_reports")
    assert report == {"result_status": "P", "study_id": study_id}
