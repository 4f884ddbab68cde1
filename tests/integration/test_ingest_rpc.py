"""The Ingest RPC against real PostgreSQL and NATS: stored, duplicate, rejected, completion."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture()
async def ingest(database_url: str, nats, tmp_path: Path):  # type: ignore[no-untyped-def]
    from ingest_svc import main
    from ingest_svc.settings import IngestSettings

    nats.install(tmp_path)
    port = free_port()
    test_pki.install(tmp_path)
    settings = IngestSettings(
        database_url=database_url,
        nats_url=nats.url,
        data_dir=tmp_path,
        ingest_port=port,
        dicom_port=0,
        completion_poll_s=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(main.run(settings, stop))
    channel = test_pki.aio_channel(f"127.0.0.1:{port}", "operator")
    await asyncio.wait_for(channel.channel_ready(), 20)
    yield pb_grpc.IngestServiceStub(channel)
    await channel.close()
    stop.set()
    await asyncio.wait_for(task, 30)


def _upload(
    items: list[tuple[bytes, str]], facility: str = "general", request_id: str = ""
) -> list[pb.UploadInstancesRequest]:
    return [
        pb.UploadInstancesRequest(
            facility=facility if i == 0 else "",
            dicom=d,
            source_ref=r,
            request_id=request_id if i == 0 else "",
        )
        for i, (d, r) in enumerate(items)
    ]


async def test_store_duplicate_and_rejections(ingest, database_url: str) -> None:  # type: ignore[no-untyped-def]
    add_facility(database_url, "general", quiet_period_s=0.3)
    study = "1.2.826.0.1.3680043.8.498.1"
    good = to_bytes(ct_slice(study, z=1.0))
    no_study = ct_slice(z=2.0)
    del no_study.StudyInstanceUID
    bad_uid = ct_slice("1.2.3.abc", z=3.0)
    long_uid = ct_slice("1." + "2" * 70, z=4.0)
    items = [
        (good, "good"),
        (to_bytes(no_study), "nostudy"),
        (to_bytes(bad_uid), "baduid"),
        (to_bytes(long_uid), "longuid"),
        (b"not dicom at all" * 20, "junk"),
        (good, "again"),
    ]
    resp = await ingest.UploadInstances(iter(_upload(items)))
    outcomes = [(r.source_ref, pb.InstanceOutcome.Name(r.outcome), r.reason) for r in resp.results]
    assert outcomes == [
        ("good", "INSTANCE_OUTCOME_STORED", ""),
        ("nostudy", "INSTANCE_OUTCOME_REJECTED", "MISSING_STUDY_INSTANCE_UID"),
        ("baduid", "INSTANCE_OUTCOME_REJECTED", "INVALID_UID"),
        ("longuid", "INSTANCE_OUTCOME_REJECTED", "INVALID_UID"),
        ("junk", "INSTANCE_OUTCOME_REJECTED", "NOT_DICOM"),
        ("again", "INSTANCE_OUTCOME_DUPLICATE", ""),
    ]
    assert "StudyInstanceUID" in resp.results[2].message
    assert (resp.stored_count, resp.duplicate_count, resp.rejected_count) == (1, 1, 4)

    unknown = await ingest.UploadInstances(iter(_upload([(good, "x")], facility="nowhere")))
    assert unknown.results[0].reason == "UNKNOWN_FACILITY"

    for _ in range(100):
        with psycopg.connect(database_url) as conn:
            types = [r[0] for r in conn.execute("select type from audit_events order by seq")]
        if "study.received" in types:
            break
        await asyncio.sleep(0.1)
    assert types.count("study.receive_failed") == 5
    assert types.count("study.duplicate_seen") == 1
    assert types.count("study.received") == 1
    with psycopg.connect(database_url) as conn:
        n, status = conn.execute(
            "select instance_count, ingest_status from studies where study_instance_uid=%s",
            (study,),
        ).fetchone()
        unpublished = conn.execute(
            "select count(*) from outbox where published_at is null"
        ).fetchone()
    assert (n, status) == (1, "complete")
    await asyncio.sleep(0.3)
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute("select count(*) from outbox where published_at is null").fetchone()[0]
            == 0
        )
    assert unpublished[0] >= 0


async def test_request_id_returns_first_result(ingest, database_url: str) -> None:  # type: ignore[no-untyped-def]
    add_facility(database_url, "general")
    data = to_bytes(ct_slice(z=1.0))
    rid = str(uuid.uuid4())
    first = await ingest.UploadInstances(iter(_upload([(data, "a")], request_id=rid)))
    again = await ingest.UploadInstances(iter(_upload([(data, "a")], request_id=rid)))
    assert first.results[0].outcome == pb.INSTANCE_OUTCOME_STORED
    assert again == first


async def test_complete_study_and_late_instance_reopens(ingest, database_url: str) -> None:  # type: ignore[no-untyped-def]
    add_facility(database_url, "general", quiet_period_s=3600)
    study = "1.2.826.0.1.3680043.8.498.77"
    await ingest.UploadInstances(iter(_upload([(to_bytes(ct_slice(study, z=1.0)), "a")])))
    done = await ingest.CompleteStudy(
        pb.CompleteStudyRequest(facility="general", study_instance_uid=study)
    )
    assert done.completed_count == 1
    again = await ingest.CompleteStudy(
        pb.CompleteStudyRequest(facility="general", study_instance_uid=study)
    )
    assert again.completed_count == 0
    await ingest.UploadInstances(iter(_upload([(to_bytes(ct_slice(study, z=2.0)), "b")])))
    await ingest.CompleteStudy(
        pb.CompleteStudyRequest(facility="general", study_instance_uid=study)
    )
    with psycopg.connect(database_url) as conn:
        types = [r[0] for r in conn.execute("select type from audit_events order by seq")]
        studies = conn.execute("select count(*), max(completion_count) from studies").fetchone()
    assert types == ["study.received", "study.reopened", "study.updated"]
    assert studies == (1, 2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.CompleteStudy(
            pb.CompleteStudyRequest(facility="general", study_instance_uid="1.02.x")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
