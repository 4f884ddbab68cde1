"""Prior studies against a real Orthanc holding an earlier study of the same patient: the C-FIND
records it, the C-MOVE brings it to the ingest SCP as received objects of the facility, and a
PACS that is down is recorded as `priors.failed` after its retries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import text

from protos.sidecar.events.v1 import priors_events_pb2 as ppb
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.errors import TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import Topology
from sidecar_core.store.models import Facility, Study
from tests.helpers import ct_slice, to_bytes
from tests.integration.test_dimse import running_ingest
from tests.orthanc_peer import available, orthanc
from tests.servers import free_port
from workflow_svc.priors.worker import PriorsConfig, PriorsWorker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not available(), reason="needs root, unshare and Orthanc")]
TOPOLOGY = Topology("priorstest", "PRIORSTEST")
LOOPBACK = EgressPolicy.parse("127.0.0.1")
PACS_AE = "NORTH_PACS"  # the facility's AE title: the PACS calls with it on a C-MOVE
MOVE_PORT = 11112  # the sidecar's SCP as Orthanc sees it inside its namespace


def _study_files(patient: str, date: str, description: str, n: int = 3,
                 modality: str = "CT") -> tuple[str, list[bytes]]:
    study, series = generate_uid(), generate_uid()
    files = []
    for z in range(n):
        ds = ct_slice(study, series, z=float(z), accession=f"A-{date}")
        ds.Modality = modality
        ds.PatientID = patient
        ds.StudyDate = date
        ds.StudyDescription = description
        files.append(to_bytes(ds))
    return study, files


async def _seed(db: Database, pacs_port: int, current_uid: str) -> uuid.UUID:
    study_id = uuid.uuid4()
    async with db.unit_of_work() as s:
        fid = uuid.uuid4()
        s.add(Facility(id=fid, name="north", ae_title=PACS_AE, pacs_ae_title=PACS_AE,
                       pacs_host="127.0.0.1", pacs_port=pacs_port, quiet_period_s=0.5))
        await s.flush()
        s.add(Study(id=study_id, facility_id=fid, accession="ACC-NOW",
                    study_instance_uid=current_uid, modality="CT", state="ready_for_review",
                    eligible=True, ingest_status="complete",
                    dicom_attributes={"PatientID": "PAT-7", "StudyDate": "20250105"}))
    return study_id


def _delivery(study_id: uuid.UUID, action: int, prior_id: str = "", job_id: str = "",
              attempt: int = 1, max_deliver: int = 3) -> Delivery:
    job = ppb.PriorsJob(job_id=job_id or f"priors-find:{study_id.hex}:0",
                        study_id=str(study_id), action=action,  # type: ignore[arg-type]
                        prior_id=prior_id)
    return Delivery("priorstest.job.v1.priors", job.SerializeToString(), attempt, job.job_id,
                    max_deliver)


async def _rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.read() as s:
        return [dict(r._mapping) for r in (await s.execute(text(sql), params)).all()]


async def test_cfind_records_the_prior_and_cmove_brings_it_in(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    db = Database(database_url)
    current_uid, current = _study_files("PAT-7", "20250105", "CT chest now")
    prior_uid, prior = _study_files("PAT-7", "20230310", "CT chest before")
    other_uid, other = _study_files("PAT-9", "20240101", "someone else")
    try:
        async with orthanc(tmp_path / "pacs", aet=PACS_AE, DicomModalities={
                "sidecar": ["SIDECAR", "127.0.0.1", MOVE_PORT]}) as pacs, \
                running_ingest(database_url, nats, tmp_path / "ingest") as ingest:
            await pacs.reach_back(MOVE_PORT, ingest.dicom_port)
            await pacs.upload(current + prior + other)
            study_id = await _seed(db, pacs.dicom_port, current_uid)
            worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK, config=PriorsConfig())
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))  # redelivered

            found = await _rows(db, "select * from prior_studies")
            assert [(r["study_instance_uid"], r["study_date"], r["description"],
                     r["modalities"], r["accession"], r["instance_count"]) for r in found] == [
                (prior_uid, "20230310", "CT chest before", "CT", "A-20230310", 3)]
            assert other_uid not in str(found)  # another patient's study is not a prior
            [event] = await _rows(db, "select context from audit_events "
                                      "where type = 'priors.found'")  # once: redelivery skips
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
            # every C-STORE of the C-MOVE was acknowledged after it was durable
            stored = await _rows(
                db, "select i.sop_instance_uid, f.name, i.source from instances i "
                    "join studies s on s.id = i.study_id join facilities f "
                    "on f.id = s.facility_id where s.study_instance_uid = :u", u=prior_uid)
            assert len(stored) == 3
            assert {(r["name"], r["source"]) for r in stored} == {("north", "dimse")}  # not derived
            [row] = await _rows(db, "select retrieve_status, retrieved_count from "
                                    "prior_studies")
            assert row == {"retrieve_status": "retrieved", "retrieved_count": 3}
            [moved] = await _rows(db, "select context from audit_events "
                                      "where type = 'priors.retrieved'")
            assert moved["context"]["completed"] == 3
            assert moved["context"]["prior_study_instance_uid"] == prior_uid
            # a repeated delivery of the same job does nothing more
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_RETRIEVE,
                                          str(prior_id), job_id))
            assert len(await _rows(db, "select id from audit_events "
                                       "where type = 'priors.retrieved'")) == 1
    finally:
        await db.close()


async def test_pacs_down_retries_then_records_priors_failed(database_url: str) -> None:
    db = Database(database_url)
    try:
        study_id = await _seed(db, free_port(), generate_uid())  # nothing listens there
        worker = PriorsWorker(db, TOPOLOGY, egress=LOOPBACK,
                              config=PriorsConfig(find_timeout_s=3))
        with pytest.raises(TransientError):
            await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND, attempt=1))
        # the last attempt records the failure and lets the job go (no dead letter)
        await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND, attempt=3))
        types = [r["type"] for r in await _rows(
            db, "select type from audit_events where type like 'priors.%' order by seq")]
        assert types == ["priors.retrying", "priors.failed"]
        [lookup] = await _rows(db, "select status, last_error from prior_lookups")
        assert lookup["status"] == "failed" and "no association" in lookup["last_error"]
        assert not await _rows(db, "select id from prior_studies")
        async with db.read() as s:  # the study itself is untouched
            assert (await s.get(Study, study_id)).state == "ready_for_review"  # type: ignore
    finally:
        await db.close()


async def test_a_refused_pacs_address_is_a_security_event(database_url: str) -> None:
    db = Database(database_url)
    try:
        study_id = await _seed(db, free_port(), generate_uid())
        worker = PriorsWorker(db, TOPOLOGY, egress=EgressPolicy())  # loopback not listed
        await worker.handle(_delivery(study_id, ppb.PRIORS_ACTION_FIND))
        types = [r["type"] for r in await _rows(
            db, "select type from audit_events order by seq")]
        assert types == ["security.egress_refused", "priors.failed"]
    finally:
        await db.close()

