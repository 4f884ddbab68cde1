"""Ingest stores patient and study attributes per study (studies.dicom_attributes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
    settings = IngestSettings(database_url=database_url, nats_url=nats.url, data_dir=tmp_path,
                              ingest_port=port, dicom_port=0, completion_poll_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(main.run(settings, stop))
    channel = test_pki.aio_channel(f"127.0.0.1:{port}", "operator")
    await asyncio.wait_for(channel.channel_ready(), 20)
    yield pb_grpc.IngestServiceStub(channel)
    await channel.close()
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_study_attributes_first_value_wins_and_modalities_accumulate(
        ingest, database_url: str) -> None:  # type: ignore[no-untyped-def]
    add_facility(database_url, "general", quiet_period_s=30)
    study = "1.2.826.0.1.3680043.8.498.77"
    first = ct_slice(study, accession="A-1")
    first.SpecificCharacterSet = "ISO_IR 192"
    first.PatientName = "Wang^XiaoDong=王^小東"
    first.PatientBirthDate, first.StudyDate = "19700102", "20240301"
    first.PatientSex = ""
    second = ct_slice(study, accession="A-1", z=1.0)
    second.SeriesInstanceUID = first.SeriesInstanceUID
    second.PatientName, second.PatientSex = "Other^Name", "M"  # name already set; sex is new
    other_series = ct_slice(study, accession="A-1", z=2.0)
    other_series.Modality = "PT"
    items = [to_bytes(first), to_bytes(second), to_bytes(other_series)]
    reply = await ingest.IngestInstances(pb.IngestInstancesRequest(
        facility="general", items=[pb.IngestInstancesRequestItem(dicom=d) for d in items]))
    assert [r.outcome for r in reply.results] == [pb.INSTANCE_OUTCOME_STORED] * 3
    with psycopg.connect(database_url) as conn:
        (attrs,) = conn.execute("SELECT dicom_attributes FROM studies "
                                "WHERE study_instance_uid = %s", (study,)).fetchone()  # type: ignore[misc]
    assert attrs["PatientName"] == {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}
    assert attrs["PatientID"] == "SYNTH-1"
    assert attrs["PatientSex"] == "M"
    assert attrs["PatientBirthDate"] == "19700102"
    assert attrs["StudyDate"] == "20240301"
    assert attrs["AccessionNumber"] == "A-1"
    assert attrs["ModalitiesInStudy"] == ["CT", "PT"]
