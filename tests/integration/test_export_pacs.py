"""The reviewed SR and SEG go by C-STORE to a real Orthanc and are read back with highdicom."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy import text

from imaging_svc.derived.content import DerivedFinding, RunInfo, tracking_uid, uid_of
from imaging_svc.derived.seg import build_seg
from imaging_svc.derived.sr import build_sr
from protos.sidecar.events.v1 import report_events_pb2
from sidecar_core.db import Database
from sidecar_core.egress import EgressPolicy
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.messaging.bus import Delivery
from sidecar_core.messaging.subjects import Topology
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store.models import AiRun, DerivedObject, Facility, Instance, Series, Study
from sidecar_synth import generate
from tests.orthanc_peer import available, orthanc
from tests.servers import free_port
from workflow_svc.report_loop.export import DerivedResults, ExportWorker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not available(), reason="needs root, unshare and Orthanc")]
TOPOLOGY = Topology("exporttest", "EXPORTTEST")
# Orthanc listens on loopback: listed, as an operator lists a PACS on a private address.
LOOPBACK = EgressPolicy.parse("127.0.0.1")
CHEST = {"slices": 6, "rows": 64, "cols": 64}


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


async def _seed(db: Database, store: ObjectStore, folder: Path, port: int
                ) -> tuple[uuid.UUID, dict[str, Any]]:
    """A study whose AI run has an SR (one accepted box) and a SEG written by the ohif-sr
    writer's builders, stored and indexed as derived objects."""
    generate("chest-ct", folder, seed=2, **CHEST)
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in folder.rglob("*.dcm")),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    src = sources[2]
    run_id, finding_id = uuid.uuid4(), str(uuid.uuid4())
    run = RunInfo(str(run_id), "chest_ct_nodules", "1", src.SeriesInstanceUID)
    box = DerivedFinding(finding_id, "Lung nodule candidate", "SCT:27925004", 0.8, "box",
                         src.SeriesInstanceUID, src.SOPInstanceUID, bbox_px=(10.0, 12.0, 20.0,
                                                                              24.0),
                         review_status="accepted", measurements={"diameter_mm": 6.0})
    sr = build_sr(run, [box], {src.SOPInstanceUID: src}, version=1,
                  series_instance_uid=uid_of(run_id, "sr"),
                  sop_instance_uid=uid_of(run_id, "sr", 1))
    mask = np.zeros((len(sources), src.Rows, src.Columns), dtype=bool)
    mask[1:4, 10:20, 12:24] = True
    seg = build_seg(run, [(box, mask)], sources, series_instance_uid=uid_of(run_id, "seg"),
                    sop_instance_uid=uid_of(run_id, "seg", 1), version=1)
    study_id, series_id = uuid.uuid4(), uuid.uuid4()
    async with db.unit_of_work() as s:
        fid = uuid.uuid4()
        s.add(Facility(id=fid, name="north", pacs_ae_title="ORTHANC", pacs_host="127.0.0.1",
                       pacs_port=port))
        await s.flush()
        s.add(Study(id=study_id, facility_id=fid, accession="ACC-X",
                    study_instance_uid=src.StudyInstanceUID, state="in_review",
                    ingest_status="complete"))
        await s.flush()
        s.add(Series(id=series_id, study_id=study_id, series_instance_uid=src.SeriesInstanceUID))
        await s.flush()
        s.add(AiRun(id=run_id, study_id=study_id, series_id=series_id,
                    model_name="chest_ct_nodules", status="completed"))
        await s.flush()
        for kind, ds in (("sr", sr), ("seg", seg)):
            key = store.put(_bytes(ds))
            inst = Instance(id=uuid.uuid4(), series_id=series_id, study_id=study_id,
                            sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                            object_key=key, size_bytes=1, source="derived")
            s.add(inst)
            await s.flush()
            s.add(DerivedObject(study_id=study_id, ai_run_id=run_id, instance_id=inst.id,
                                kind=kind, version=1, series_instance_uid=ds.SeriesInstanceUID,
                                sop_instance_uid=ds.SOPInstanceUID, fingerprint="f",
                                finding_count=1, reason="test"))
    return study_id, {"sr": sr.SOPInstanceUID, "seg": seg.SOPInstanceUID,
                      "tracking": tracking_uid(finding_id)}


def _delivery(study_id: uuid.UUID, attempt: int = 1, max_deliver: int = 3) -> Delivery:
    job = report_events_pb2.ExportJob(job_id=f"export:{study_id.hex}:0", study_id=str(study_id))
    return Delivery("exporttest.job.v1.export", job.SerializeToString(), attempt, job.job_id,
                    max_deliver)


async def _rows(db: Database, sql: str) -> list[dict[str, Any]]:
    async with db.read() as s:
        return [dict(r._mapping) for r in (await s.execute(text(sql))).all()]


async def test_sr_and_seg_reach_orthanc(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        async with orthanc(tmp_path / "pacs") as pacs:
            study_id, uids = await _seed(db, store, tmp_path / "ct", pacs.dicom_port)
            worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK)
            await worker.handle(_delivery(study_id))
            await worker.handle(_delivery(study_id))  # a redelivery sends nothing again
            files = await pacs.instance_files()
        by_uid = {pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID: f for f in files}
        assert set(by_uid) == {uids["sr"], uids["seg"]}
        report = hd.sr.srread(io.BytesIO(by_uid[uids["sr"]]))
        [group] = report.content.get_planar_roi_measurement_groups()
        assert group.tracking_uid == uids["tracking"]
        seg = hd.seg.segread(io.BytesIO(by_uid[uids["seg"]]))
        assert seg.number_of_segments == 1
        sent = await _rows(db, "select context from audit_events where type='export.sent'")
        assert sorted(r["context"]["kind"] for r in sent) == ["seg", "sr"]
        assert {r["context"]["destination"] for r in sent} == {
            f"ORTHANC@127.0.0.1:{pacs.dicom_port}"}
        rows = await _rows(db, "select status, dimse_status from exports")
        assert rows == [{"status": "sent", "dimse_status": 0}] * 2
    finally:
        await db.close()


async def test_pacs_down_retries_then_fails(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        study_id, _ = await _seed(db, store, tmp_path / "ct", free_port())  # nothing listens
        worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK)
        with pytest.raises(TransientError):
            await worker.handle(_delivery(study_id, attempt=1))
        with pytest.raises(TransientError):
            await worker.handle(_delivery(study_id, attempt=3))
        types = [r["type"] for r in await _rows(
            db, "select type from audit_events where type like 'export.%' order by seq")]
        assert types == ["export.retrying", "export.failed"]
        assert not await _rows(db, "select id from exports where status='sent'")
    finally:
        await db.close()


async def test_an_unlisted_loopback_pacs_is_refused(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        study_id, _ = await _seed(db, store, tmp_path / "ct", free_port())
        worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=EgressPolicy())
        with pytest.raises(PermanentError, match="refused by the egress policy"):
            await worker.handle(_delivery(study_id, attempt=1))
        rows = await _rows(db, "select type, error_class, context from audit_events where "
                           "type in ('security.egress_refused', 'export.failed') order by seq")
        assert [r["type"] for r in rows] == ["security.egress_refused", "export.failed"]
        assert rows[0]["error_class"] == "EGRESS_ADDRESS_REFUSED"
        assert rows[1]["context"]["final"] is True
        assert not await _rows(db, "select id from exports")
    finally:
        await db.close()
