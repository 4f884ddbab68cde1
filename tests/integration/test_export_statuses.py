"""The export's C-STORE (the kernel's StoreSCU) against a pynetdicom peer that refuses: the
DIMSE status of each object, 0x0122 where the peer took no context for it."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SegmentationStorage,
)

from sidecar_core.dicom.peer import DicomPeer
from sidecar_core.errors import TransientError
from tests.servers import free_port
from workflow_svc.report_loop.export import ExportObject, c_store

pytestmark = pytest.mark.integration


def _object(kind: str, sop_class: str) -> ExportObject:
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return ExportObject(kind, str(ds.SOPInstanceUID), buf.getvalue())


def test_each_object_gets_the_peers_status_or_0122_without_a_context() -> None:
    received: list[str] = []

    def refuse(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0xA700  # out of resources

    peer = AE(ae_title="PEER")
    peer.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)  # no SEG
    port = free_port()
    server = peer.start_server(("127.0.0.1", port), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, refuse)])
    sr = _object("sr", Comprehensive3DSRStorage)
    seg = _object("seg", SegmentationStorage)
    try:
        statuses = c_store(DicomPeer("PEER", "127.0.0.1", port), [sr, seg], timeout_s=10)
    finally:
        server.shutdown()
    assert statuses == {sr.sop_instance_uid: 0xA700, seg.sop_instance_uid: 0x0122}
    assert received == [sr.sop_instance_uid]


def test_a_rejected_association_is_transient() -> None:
    peer = AE(ae_title="PEER")
    peer.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)
    peer.require_called_aet = True  # the export calls "OTHER": rejected
    port = free_port()
    server = peer.start_server(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(TransientError, match="no association with OTHER@127.0.0.1"):
            c_store(DicomPeer("OTHER", "127.0.0.1", port),
                    [_object("sr", Comprehensive3DSRStorage)], timeout_s=10)
    finally:
        server.shutdown()
