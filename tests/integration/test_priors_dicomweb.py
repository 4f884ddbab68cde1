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


class HostilePacs:
    """A DICOMweb PACS answering what the test sets: (status, content type, body) per path."""

    def __init__(self) -> None:
        from fastapi import FastAPI
        from fastapi.responses import Response

        self.answers: dict[str, tuple[int, str, bytes]] = {}
        self.app = FastAPI()

        @self.app.get("/dw/{path:path}")
        async def answer(path: str) -> Response:
            status, media, body = self.answers["/" + path]
            return Response(body, status_code=status, media_type=media)


async def test_hostile_answers_fail_the_job_precisely_and_never_block(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    import json

    from tests.http_peers import serve
    from tests.unit.sidecar_core.dicom.test_dicomweb_scu import WADO_TYPE, _multipart

    fake = HostilePacs()
    db = Database(database_url)
    current_uid = generate_uid()
    prior_uid, prior = _study_files("PAT-7", "20230310", "CT chest before")
    _, stranger = _study_files("PAT-9", "20230310", "someone else")
    try:
        with serve(fake.app) as port:
            study_id = await _seed(db, f"http://127.0.0.1:{port}/dw", current_uid)
            async with running_ingest(database_url, nats, tmp_path / "ingest") as ingest:
                channel = test_pki.aio_channel(f"127.0.0.1:{ingest.grpc_port}", "workflow")
                worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK,
                                      ingest=lambda: ipb_grpc.IngestServiceStub(channel))
                # bad JSON: failed at once (not retried), with its cause
                fake.answers["/studies"] = (200, "application/dicom+json", b"[{\"0020")
                await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND, attempt=1))
                [lookup] = await _rows(db, "select status, last_error from prior_lookups")
                assert lookup["status"] == "failed"
                assert lookup["last_error"].startswith("the QIDO-RS answer is not JSON")
                # a good answer later: another patient's match left out
                fake.answers["/studies"] = (200, "application/dicom+json", json.dumps([
                    {"0020000D": {"vr": "UI", "Value": [prior_uid]},
                     "00100020": {"vr": "LO", "Value": ["PAT-7"]},
                     "00080020": {"vr": "DA", "Value": ["20230310"]}},
                    {"0020000D": {"vr": "UI", "Value": [generate_uid()]},
                     "00100020": {"vr": "LO", "Value": ["PAT-9"]}}]).encode())
                async with db.unit_of_work() as s:
                    await s.execute(text("delete from prior_lookups"))
                await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
                [found] = await _rows(db, "select id, study_instance_uid from prior_studies")
                assert found["study_instance_uid"] == prior_uid
                [event] = await _rows(db, "select context from audit_events "
                                          "where type = 'priors.found'")
                assert event["context"]["ignored_other_patient"] == 1

                async def retrieve(body: bytes, media: str = WADO_TYPE) -> dict[str, Any]:
                    fake.answers[f"/studies/{prior_uid}"] = (200, media, body)
                    job_id = f"priors-retrieve:{found['id'].hex}:{uuid.uuid4().hex[:6]}"
                    async with db.unit_of_work() as s:
                        await s.execute(text(
                            "update prior_studies set retrieve_status='queued', "
                            "retrieve_job_id=:j where id=:i"), {"j": job_id, "i": found["id"]})
                    await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_RETRIEVE,
                                                  str(found["id"]), job_id))
                    [row] = await _rows(db, "select retrieve_status, retrieved_count, "
                                            "last_error from prior_studies")
                    return row

                # a part that is not DICOM: the retrieval fails with the part named
                row = await retrieve(_multipart([("application/dicom", b"MZ" + b"\0" * 300)]))
                assert row["retrieve_status"] == "failed"
                assert row["last_error"] == "part 1 is not a DICOM file (no DICM prefix)"
                # the wrong content type
                row = await retrieve(b"<html></html>", "text/html")
                assert row["retrieve_status"] == "failed"
                assert "answered 'text/html', not multipart/related" in row["last_error"]
                # only another patient's objects: nothing stored, failed
                row = await retrieve(_multipart([("application/dicom", stranger[0])]))
                assert row["retrieve_status"] == "failed"
                assert "no object of the study was stored" in row["last_error"]
                # the study's objects with another patient's among them: that one left out
                row = await retrieve(_multipart([("application/dicom", d)
                                                 for d in [prior[0], stranger[1], *prior[1:]]]))
                assert row == {"retrieve_status": "retrieved", "retrieved_count": 3,
                               "last_error": "1 object(s) not stored"}
                assert len(ingest.rows("select i.id from instances i join studies s on "
                                       "s.id = i.study_id where s.study_instance_uid = %s",
                                       prior_uid)) == 3
                failures = await _rows(db, "select type from audit_events where type = "
                                           "'priors.retrieve_failed'")
                assert len(failures) == 3
                await channel.close()
        async with db.read() as s:  # the study itself is untouched throughout
            assert (await s.get(Study, study_id)).state == "ready_for_review"  # type: ignore
    finally:
        await db.close()
