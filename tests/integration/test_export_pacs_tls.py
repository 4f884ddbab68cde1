"""The export to the PACS over DICOM TLS: a real Orthanc with DicomTlsEnabled (its certificate
from a PACS CA, our client certificate required and checked against DicomTlsTrustedCertificates)
receives the SR and SEG; a PACS certificate the sidecar does not trust is a clear export error."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import text

from sidecar_core.db import Database
from sidecar_core.errors import PermanentError, TransientError
from sidecar_core.security import dicom_tls, pki
from sidecar_core.security.identity import Identity
from sidecar_core.storage.objectstore import ObjectStore
from tests import pki as test_pki
from tests.integration.test_export_pacs import LOOPBACK, TOPOLOGY, _delivery, _rows, _seed
from tests.orthanc_peer import available, orthanc
from workflow_svc.report_loop.export import DerivedResults, ExportWorker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not available(), reason="needs root, unshare and Orthanc")]


def _material(folder: Path) -> dict[str, Path]:
    """The PACS's certificate (for 127.0.0.1, from a PACS CA) and the sidecar's DICOM TLS
    client certificate (from a client CA that Orthanc trusts)."""
    folder.mkdir(parents=True, exist_ok=True)
    pacs_ca, pacs_cert, pacs_key = test_pki.web_certificate(folder, "Hospital PACS CA")
    clients = pki.Authority.create("Sidecar DICOM client CA")
    issued = clients.issue(Identity("service", "sidecar"), server=False)
    paths = {"pacs_ca": pacs_ca, "pacs_cert": pacs_cert, "pacs_key": pacs_key,
             "client_ca": folder / "client-ca.crt", "client_cert": folder / "client.crt",
             "client_key": folder / "client.key"}
    for name, pem in (("client_ca", clients.cert_pem), ("client_cert", issued.cert_pem),
                      ("client_key", issued.key_pem)):
        paths[name].write_bytes(pem)
    return paths


def _orthanc_tls(m: dict[str, Path]) -> dict[str, object]:
    return {"DicomTlsEnabled": True, "DicomTlsCertificate": str(m["pacs_cert"]),
            "DicomTlsPrivateKey": str(m["pacs_key"]),
            "DicomTlsTrustedCertificates": str(m["client_ca"]),
            "DicomTlsRemoteCertificateRequired": True}


async def _use_tls(db: Database) -> None:
    async with db.unit_of_work() as s:
        await s.execute(text("update facilities set pacs_tls = true where name = 'north'"))


async def test_sr_and_seg_reach_orthanc_over_dicom_tls(database_url: str, tmp_path: Path) -> None:
    m = _material(tmp_path / "pki")
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        async with orthanc(tmp_path / "pacs", **_orthanc_tls(m)) as pacs:
            study_id, uids = await _seed(db, store, tmp_path / "ct", pacs.dicom_port)
            await _use_tls(db)
            # Without DICOM TLS the TLS-only PACS cannot be reached at all.
            plain = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK)
            with pytest.raises(PermanentError, match="no DICOM TLS settings"):
                await plain.handle(_delivery(study_id))
            worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK,
                                  tls=lambda: (
                dicom_tls.scu_context(m["pacs_ca"], m["client_cert"], m["client_key"])))
            await worker.handle(_delivery(study_id))
            files = await pacs.instance_files()
        stored = {pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID for f in files}
        assert stored == {uids["sr"], uids["seg"]}
        sent = await _rows(db, "select context from audit_events where type='export.sent'")
        assert len(sent) == 2 and all(r["context"]["tls"] is True for r in sent)
    finally:
        await db.close()


async def test_untrusted_pacs_certificate_is_a_clear_export_failure(database_url: str,
                                                                    tmp_path: Path) -> None:
    m = _material(tmp_path / "pki")
    other_ca, _, _ = test_pki.web_certificate(tmp_path, "Some other CA")
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        async with orthanc(tmp_path / "pacs", **_orthanc_tls(m)) as pacs:
            study_id, _ = await _seed(db, store, tmp_path / "ct", pacs.dicom_port)
            await _use_tls(db)
            worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK,
                                  tls=lambda: (
                dicom_tls.scu_context(other_ca, m["client_cert"], m["client_key"])))
            with pytest.raises(PermanentError, match="certificate verify failed"):
                await worker.handle(_delivery(study_id, attempt=1))
            assert await pacs.instance_files() == []
        failed = await _rows(db, "select error_message, context from audit_events "
                             "where type = 'export.failed'")
        assert len(failed) == 1 and failed[0]["context"]["final"] is True
        assert "certificate verify failed" in failed[0]["error_message"]
        assert failed[0]["context"]["tls"] is True
        assert not await _rows(db, "select id from exports where status = 'sent'")
    finally:
        await db.close()


async def test_a_client_certificate_the_pacs_refuses_is_named_in_the_error(
        database_url: str, tmp_path: Path) -> None:
    m = _material(tmp_path / "pki")
    stranger = pki.Authority.create("Unknown client CA").issue(Identity("service", "x"),
                                                               server=False)
    (tmp_path / "stranger.crt").write_bytes(stranger.cert_pem)
    (tmp_path / "stranger.key").write_bytes(stranger.key_pem)
    db = Database(database_url)
    store = ObjectStore(tmp_path / "objects", fsync=False)
    try:
        async with orthanc(tmp_path / "pacs", **_orthanc_tls(m)) as pacs:
            study_id, _ = await _seed(db, store, tmp_path / "ct", pacs.dicom_port)
            await _use_tls(db)
            worker = ExportWorker(db, TOPOLOGY, DerivedResults(store), egress=LOOPBACK,
                                  tls=lambda: (
                dicom_tls.scu_context(m["pacs_ca"], tmp_path / "stranger.crt",
                                      tmp_path / "stranger.key")))
            with pytest.raises(TransientError, match="DICOM TLS handshake with ORTHANC@") as err:
                await worker.handle(_delivery(study_id, attempt=1))
            assert await pacs.instance_files() == []
        retrying = await _rows(db, "select error_message from audit_events "
                               "where type = 'export.retrying'")
        assert len(retrying) == 1 and "DICOM TLS handshake" in retrying[0]["error_message"]
        assert "alert" in str(err.value)
    finally:
        await db.close()
