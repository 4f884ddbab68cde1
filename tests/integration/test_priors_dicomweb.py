"""Prior studies from a DICOMweb PACS: a real Orthanc with its DICOMweb plugin holds an earlier
study of the same patient; QIDO-RS records it (another patient's study and the current one left
out), WADO-RS brings it in through the ingest service's Ingest RPC as received objects of the
facility, and a DICOMweb PACS that is down or refused is `priors.failed`, the study untouched."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import text

from protos.sidecar.events.v1 import priors_events_pb2 as ppb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.errors import TransientError
from sidecar_core.secret_box import SecretBox, facility_context
from sidecar_core.store.models import Facility, Study
from tests import pki as test_pki
from tests.integration.test_dimse import running_ingest
from tests.integration.test_priors import TOPOLOGY, _delivery, _rows, _study_files
from tests.orthanc_peer import available, orthanc
from tests.servers import free_port
from workflow_svc.priors.jobs import enqueue_find
from workflow_svc.priors.worker import PriorsConfig, PriorsWorker

pytestmark = [pytest.mark.integration]
LOOPBACK = EgressPolicy.parse("127.0.0.1")
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
BOX = SecretBox(os.urandom(32))


def dicomweb_available() -> bool:
    return available() and Path(DICOMWEB_PLUGIN).exists()


async def _seed(db: Database, url: str, current_uid: str, auth: str = "") -> uuid.UUID:
    """A facility whose PACS is only a DICOMweb one, and its covered current study."""
    study_id = uuid.uuid4()
    async with db.unit_of_work() as s:
        fid = uuid.uuid4()
        s.add(Facility(id=fid, name="north", ae_title="NORTH_CT", pacs_dicomweb_url=url,
                       pacs_dicomweb_auth=BOX.seal(auth, facility_context(
                           "north", "pacs_dicomweb_auth")) if auth else None,
                       quiet_period_s=0.5))
        await s.flush()
        s.add(Study(id=study_id, facility_id=fid, accession="ACC-NOW",
                    study_instance_uid=current_uid, modality="CT", state="ready_for_review",
                    eligible=True, ingest_status="complete", completion_count=1,
                    dicom_attributes={"PatientID": "PAT-7", "StudyDate": "20250105"}))
    return study_id


@pytest.mark.skipif(not dicomweb_available(),
                    reason="needs root, unshare, Orthanc and orthanc-dicomweb")
async def test_qido_records_the_prior_and_wado_brings_it_in(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    db = Database(database_url)
    current_uid, current = _study_files("PAT-7", "20250105", "CT chest now")
    prior_uid, prior = _study_files("PAT-7", "20230310", "CT chest before")
    mr_uid, mr = _study_files("PAT-7", "20240202", "MR of the same patient",
                              modality="MR")  # another modality: not asked for
    other_uid, other = _study_files("PAT-9", "20240101", "someone else")
    try:
        async with orthanc(tmp_path / "pacs", Plugins=[DICOMWEB_PLUGIN],
                           DicomWeb={"Enable": True, "Root": "/dicom-web/"}) as pacs, \
                running_ingest(database_url, nats, tmp_path / "ingest") as ingest:
            await pacs.upload(current + prior + mr + other)
            url = f"http://127.0.0.1:{pacs.http_port}/dicom-web"
            study_id = await _seed(db, url, current_uid, auth="Bearer pacs-token")
            async with db.unit_of_work() as s:  # a DICOMweb PACS alone gets a lookup queued
                assert await enqueue_find(s, TOPOLOGY, study_id)
            channel = test_pki.aio_channel(f"127.0.0.1:{ingest.grpc_port}", "workflow")
            worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK, box=BOX,
                                  ingest=lambda: ipb_grpc.IngestServiceStub(channel),
                                  config=PriorsConfig(ingest_batch_items=2))
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))  # redelivered

            found = await _rows(db, "select * from prior_studies")
            assert [(r["study_instance_uid"], r["study_date"], r["description"],
                     r["modalities"], r["accession"], r["instance_count"]) for r in found] == [
                (prior_uid, "20230310", "CT chest before", "CT", "A-20230310", 3)]
            assert other_uid not in str(found) and mr_uid not in str(found)
            [event] = await _rows(db, "select context from audit_events "
                                      "where type = 'priors.found'")
            assert event["context"]["protocol"] == "qido-rs"
            assert event["context"]["source"] == url
            assert event["context"]["prior_study_instance_uids"] == [prior_uid]
            [lookup] = await _rows(db, "select status, found_count from prior_lookups")
            assert lookup == {"status": "found", "found_count": 1}

            prior_id = found[0]["id"]
            job_id = f"priors-retrieve:{prior_id.hex}:t"
            async with db.unit_of_work() as s:
                await s.execute(text("update prior_studies set retrieve_status='queued', "
                                     "retrieve_job_id=:j where id=:i"),
                                {"j": job_id, "i": prior_id})
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_RETRIEVE,
                                          str(prior_id), job_id))
            stored = await _rows(
                db, "select i.sop_instance_uid, f.name, i.source, s.ingest_status "
                    "from instances i join studies s on s.id = i.study_id join facilities f "
                    "on f.id = s.facility_id where s.study_instance_uid = :u", u=prior_uid)
            assert len(stored) == 3  # two IngestInstances batches (2 + 1)
            assert {(r["name"], r["source"], r["ingest_status"]) for r in stored} == {
                ("north", "grpc", "complete")}  # received objects, the study completed
            # exactly the bytes the PACS holds
            assert sorted(ingest.object_bytes(r["sop_instance_uid"]) for r in stored) == \
                sorted(prior)
            [row] = await _rows(db, "select retrieve_status, retrieved_count, last_error "
                                    "from prior_studies")
            assert row == {"retrieve_status": "retrieved", "retrieved_count": 3,
                           "last_error": ""}
            [moved] = await _rows(db, "select context from audit_events "
                                      "where type = 'priors.retrieved'")
            assert moved["context"]["protocol"] == "wado-rs"
            assert (moved["context"]["completed"], moved["context"]["parts"]) == (3, 3)
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_RETRIEVE,
                                          str(prior_id), job_id))  # redelivered: nothing more
            assert len(await _rows(db, "select id from audit_events "
                                       "where type = 'priors.retrieved'")) == 1
            await channel.close()
    finally:
        await db.close()


async def test_a_dicomweb_pacs_that_is_down_retries_then_fails(database_url: str) -> None:
    db = Database(database_url)
    try:
        study_id = await _seed(db, f"http://127.0.0.1:{free_port()}/dicom-web", generate_uid())
        worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK, config=PriorsConfig(
            find_timeout_s=3))
        with pytest.raises(TransientError):
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND, attempt=1))
        await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND, attempt=3))
        types = [r["type"] for r in await _rows(
            db, "select type from audit_events where type like 'priors.%' order by seq")]
        assert types == ["priors.retrying", "priors.failed"]
        [lookup] = await _rows(db, "select status, last_error from prior_lookups")
        assert lookup["status"] == "failed" and "QIDO-RS at http://127.0.0.1" in \
            lookup["last_error"] and "ConnectError" in lookup["last_error"]
        async with db.read() as s:
            assert (await s.get(Study, study_id)).state == "ready_for_review"  # type: ignore
    finally:
        await db.close()


async def test_a_refused_dicomweb_url_is_a_security_event(database_url: str) -> None:
    db = Database(database_url)
    try:
        study_id = await _seed(db, f"http://127.0.0.1:{free_port()}/dicom-web", generate_uid())
        worker = PriorsWorker(db, TOPOLOGY, egress=EgressPolicy())  # loopback not listed
        await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
        events = await _rows(db, "select type, context from audit_events order by seq")
        assert [e["type"] for e in events] == ["security.egress_refused", "priors.failed"]
        assert events[0]["context"]["setting"] == "pacs_dicomweb_url"
    finally:
        await db.close()


async def test_a_credential_this_worker_cannot_open_fails_precisely(database_url: str) -> None:
    db = Database(database_url)
    try:
        study_id = await _seed(db, f"http://127.0.0.1:{free_port()}/dicom-web", generate_uid(),
                               auth="Bearer t")
        worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK, box=SecretBox(os.urandom(32)))
        await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
        [lookup] = await _rows(db, "select status, last_error from prior_lookups")
        assert lookup["status"] == "failed"
        assert lookup["last_error"].startswith("pacs_dicomweb_auth cannot be opened")
    finally:
        await db.close()
