"""The DIMSE C-STORE SCP against real senders (dcmtk storescu/echoscu, pynetdicom), PG and NATS."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydicom.data import get_testdata_files
from pydicom.uid import generate_uid

from sidecar_core.dicom.store_scu import (
    AssociationRefused,
    ContextRejected,
    StoreSCU,
    prepare,
    status_of,
)
from sidecar_core.storage.objectstore import ObjectStore
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.servers import free_port

pytestmark = pytest.mark.integration

STORESCU = "/usr/bin/storescu"  # dcmtk's; the venv's pynetdicom scripts shadow the name
ECHOSCU = "/usr/bin/echoscu"
FACILITY, AE_TITLE = "general", "GENERAL_PACS"
# Every file of pydicom's test collection (real-world JPEG, JPEG 2000, JPEG-LS, RLE, deflated,
# big endian, truncated, DICOMDIR, non-DICOM README/JSON/gz), sent as-is.
PYDICOM_FILES = sorted(p for p in get_testdata_files() if Path(p).is_file())


def require_dcmtk() -> None:
    if not Path(STORESCU).exists():
        subprocess.run(["apt-get", "install", "-y", "dcmtk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not Path(STORESCU).exists():
        pytest.fail("dcmtk is required: apt-get install -y dcmtk")


@dataclass
class Ingest:
    dicom_port: int
    grpc_port: int
    data_dir: Path
    database_url: str

    def scu(self, items: list[Any], calling: str = AE_TITLE) -> StoreSCU:
        return StoreSCU("127.0.0.1", self.dicom_port, calling, "SIDECAR",
                        [i.context for i in items])

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return list(conn.execute(sql, params).fetchall())

    def audit_types(self) -> list[str]:
        return [r[0] for r in self.rows("select type from audit_events order by seq")]

    def object_bytes(self, sop_instance_uid: str) -> bytes:
        (key,), = self.rows("select object_key from instances where sop_instance_uid=%s",
                            sop_instance_uid)
        return ObjectStore(self.data_dir / "objects", fsync=False).get(key)


@asynccontextmanager
async def running_ingest(database_url: str, nats: Any, data_dir: Path,
                         **overrides: Any) -> AsyncIterator[Ingest]:
    """The ingest service in this process (gRPC + DIMSE on free ports), stopped afterwards."""
    from ingest_svc import main
    from ingest_svc.settings import IngestSettings

    nats.install(data_dir)
    ports = {"ingest_port": free_port(), "dicom_port": free_port()}
    test_pki.install(data_dir)
    settings = IngestSettings(database_url=database_url, nats_url=nats.url, data_dir=data_dir,
                              completion_poll_s=0.1, **{**ports, **overrides})
    stop = asyncio.Event()
    task = asyncio.create_task(main.run(settings, stop))
    # the SCP starts before gRPC; a bare TCP probe of the DICOM port would hold an association
    # slot until the ACSE timeout, so readiness is the gRPC channel
    channel = test_pki.aio_channel(f"127.0.0.1:{settings.ingest_port}", "operator")
    try:
        await asyncio.wait_for(channel.channel_ready(), 20)
    finally:
        await channel.close()
    try:
        yield Ingest(settings.dicom_port, settings.ingest_port, data_dir, database_url)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def send(ingest: Ingest, blobs: list[bytes], calling: str = AE_TITLE) -> list[Any]:
    """C-STOREs each blob as-is on one association; returns each response status dataset."""
    items = [prepare(b) for b in blobs]
    with ingest.scu(items, calling) as scu:
        return [scu.store(i) for i in items]


async def wait_for(predicate: Any, within_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.fixture()
async def ingest(database_url: str, nats: Any, tmp_path: Path) -> AsyncIterator[Ingest]:
    add_facility(database_url, FACILITY, ae_title=AE_TITLE, quiet_period_s=0.5)
    async with running_ingest(database_url, nats, tmp_path, max_object_mb=0.5) as svc:
        yield svc


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


async def test_dcmtk_echo_and_store_folder_exactly_as_sent(ingest: Ingest,
                                                            tmp_path: Path) -> None:
    require_dcmtk()
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "in"
    folder.mkdir()
    slices = [ct_slice(study, series, z=float(z)) for z in range(5)]
    for i, ds in enumerate(slices):
        (folder / f"ct{i}.dcm").write_bytes(to_bytes(ds))
    echo = await asyncio.to_thread(_run, [ECHOSCU, "-aet", AE_TITLE, "-aec", "SIDECAR",
                                          "127.0.0.1", str(ingest.dicom_port)])
    assert echo.returncode == 0, echo.stderr
    args = [STORESCU, "+sd", "+r", "-aet", AE_TITLE, "-aec", "SIDECAR", "127.0.0.1",
            str(ingest.dicom_port), str(folder)]
    first = await asyncio.to_thread(_run, args)
    assert first.returncode == 0, first.stderr
    again = await asyncio.to_thread(_run, args)  # duplicates: success, nothing changes
    assert again.returncode == 0, again.stderr
    (n, status), = ingest.rows("select instance_count, ingest_status from studies")
    assert n == 5
    for i, ds in enumerate(slices):
        sent = prepare((folder / f"ct{i}.dcm").read_bytes())
        stored = prepare(ingest.object_bytes(ds.SOPInstanceUID))
        assert stored.dataset == sent.dataset  # the received bytes, not a re-encoding
    assert ingest.rows("select distinct source from instances") == [("dimse",)]
    await wait_for(lambda: "study.received" in ingest.audit_types())
    types = ingest.audit_types()
    assert types.count("study.duplicate_seen") == 5 and types.count("study.received") == 1


async def test_unknown_calling_ae_is_rejected_and_audited(ingest: Ingest) -> None:
    require_dcmtk()
    blob = to_bytes(ct_slice())
    with pytest.raises(AssociationRefused) as err:
        await asyncio.to_thread(send, ingest, [blob], "STRANGER")
    assert err.value.rejected == (0x01, 0x01, 0x03)
    echo = await asyncio.to_thread(_run, [ECHOSCU, "-aet", "NOBODY", "-aec", "SIDECAR",
                                          "127.0.0.1", str(ingest.dicom_port)])
    assert echo.returncode != 0
    assert "calling ae title not recognized" in (echo.stdout + echo.stderr).lower()
    rows = ingest.rows("select context->>'calling_ae', context->>'reason' from audit_events "
                       "where type='association.rejected' order by seq")
    assert rows == [("STRANGER", "calling AE title not recognised"),
                    ("NOBODY", "calling AE title not recognised")]
    assert ingest.rows("select count(*) from instances") == [(0,)]


async def test_statuses_for_each_kind_of_object(ingest: Ingest) -> None:
    good = ct_slice(z=1.0)
    no_study = ct_slice(z=2.0)
    del no_study.StudyInstanceUID
    bad_uid = ct_slice("1.2.3.abc", z=3.0)
    too_large = ct_slice(z=4.0, rows=1024, cols=1024)  # 2 MiB > the 0.5 MB limit
    blobs = [to_bytes(good), to_bytes(no_study), to_bytes(bad_uid), to_bytes(too_large),
             b"this is not DICOM" * 40, to_bytes(good)]
    items = [prepare(b) for b in blobs]
    # a CT data set sent as MR Image Storage: it does not match the SOP class it was sent as
    items.append(dataclasses.replace(prepare(to_bytes(ct_slice(z=5.0))),
                                     sop_class_uid="1.2.840.10008.5.1.4.1.1.4"))

    def send_items() -> list[Any]:
        with ingest.scu(items) as scu:
            return [scu.store(i) for i in items]

    rsps = await asyncio.to_thread(send_items)
    assert [status_of(r) for r in rsps] == [0x0000, 0xA900, 0xA900, 0xA700, 0xC000, 0x0000,
                                            0xA900]
    assert rsps[6].OffendingElement == 0x00080016
    assert rsps[6].ErrorComment.startswith("SOPClassUID 1.2.840.10008.5.1.4.1.1.2 differs")
    assert "StudyInstanceUID" in rsps[1].ErrorComment
    assert rsps[1].OffendingElement == 0x0020000D
    assert rsps[2].ErrorComment == "StudyInstanceUID is not a valid UID"
    assert rsps[3].ErrorComment.startswith("OBJECT_TOO_LARGE")
    assert rsps[4].ErrorComment.startswith("NOT_DICOM")
    types = ingest.audit_types()
    assert types.count("study.receive_failed") == 5 and types.count("study.duplicate_seen") == 1
    assert ingest.rows("select count(*) from instances") == [(1,)]


async def test_a_resent_study_with_one_new_instance(ingest: Ingest) -> None:
    """Duplicates in a row (looked up before their bytes are stored), then a new instance on
    the same association: every answer 0x0000, the new one stored intact."""
    study, series = generate_uid(), generate_uid()
    first = [to_bytes(ct_slice(study, series, z=float(z))) for z in range(3)]
    new = to_bytes(ct_slice(study, series, z=3.0))
    assert {status_of(r) for r in await asyncio.to_thread(send, ingest, first)} == {0}
    rsps = await asyncio.to_thread(send, ingest, [*first, new, first[0]])
    assert [status_of(r) for r in rsps] == [0] * 5
    assert ingest.rows("select instance_count from studies") == [(4,)]
    assert ingest.audit_types().count("study.duplicate_seen") == 4
    for blob in [*first, new]:
        sent = prepare(blob)
        assert prepare(ingest.object_bytes(sent.sop_instance_uid)).dataset == sent.dataset


async def test_late_instance_via_dimse_reopens_the_study(ingest: Ingest) -> None:
    study, series = generate_uid(), generate_uid()
    first = [to_bytes(ct_slice(study, series, z=float(z))) for z in range(3)]
    assert {status_of(r) for r in await asyncio.to_thread(send, ingest, first)} == {0}
    await wait_for(lambda: "study.received" in ingest.audit_types())
    late = to_bytes(ct_slice(study, series, z=3.0))
    rsps = await asyncio.to_thread(send, ingest, [first[0], late])  # a duplicate, a late one
    assert [status_of(r) for r in rsps] == [0, 0]
    await wait_for(lambda: "study.updated" in ingest.audit_types())
    types = [t for t in ingest.audit_types() if t.startswith("study.")]
    assert types == ["study.received", "study.duplicate_seen", "study.reopened",
                     "study.updated"]
    assert ingest.rows("select instance_count, completion_count, ingest_status from studies") \
        == [(4, 2, "complete")]


async def test_concurrent_associations_and_the_association_limit(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    add_facility(database_url, FACILITY, ae_title=AE_TITLE, quiet_period_s=3600)
    async with running_ingest(database_url, nats, tmp_path, max_associations=2) as svc:
        study = generate_uid()
        batches = [[to_bytes(ct_slice(study, z=float(10 * a + i))) for i in range(10)]
                   for a in range(2)]
        results = await asyncio.gather(*(asyncio.to_thread(send, svc, b) for b in batches))
        assert all(status_of(r) == 0 for rs in results for r in rs)
        assert svc.rows("select instance_count from studies") == [(20,)]
        holders = [svc.scu([prepare(batches[0][0])]) for _ in range(2)]
        for h in holders:
            await asyncio.to_thread(h.__enter__)
        try:
            with pytest.raises(AssociationRefused) as err:
                await asyncio.to_thread(send, svc, [batches[0][0]])
            assert err.value.rejected == (0x02, 0x03, 0x02)  # transient, local limit exceeded
        finally:
            for h in holders:
                await asyncio.to_thread(h.__exit__, None, None, None)
        for _ in range(50):  # accepted again once the released associations have ended
            try:
                rsps = await asyncio.to_thread(send, svc, [batches[0][0]])
                break
            except AssociationRefused:
                await asyncio.sleep(0.1)
        assert [status_of(r) for r in rsps] == [0]
        reasons = svc.rows("select context->>'reason' from audit_events "
                           "where type='association.rejected'")
        assert reasons == [("local limit exceeded",)]


async def test_stop_aborts_an_idle_association_at_once(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    """An open association that sends nothing must not hold up a shutdown (its network timeout
    is 60 s): the service aborts it, and the peer sees the association gone."""
    add_facility(database_url, FACILITY, ae_title=AE_TITLE, quiet_period_s=3600)
    item = prepare(to_bytes(ct_slice(z=1.0)))
    holder = None
    loop = asyncio.get_running_loop()
    async with running_ingest(database_url, nats, tmp_path) as svc:
        holder = svc.scu([item])
        await asyncio.to_thread(holder.__enter__)
        assert status_of(await asyncio.to_thread(holder.store, item)) == 0
        stopping = loop.time()
    assert loop.time() - stopping < 10, "the idle association held up the shutdown"
    for _ in range(50):  # the peer's reactor notices the A-ABORT / closed connection
        if holder.assoc is None or not holder.assoc.is_established:
            break
        await asyncio.sleep(0.1)
    with pytest.raises(AssociationRefused):
        await asyncio.to_thread(holder.store, item)
    await asyncio.to_thread(holder.__exit__, None, None, None)
    assert svc.rows("select count(*) from instances") == [(1,)]


async def test_a_peer_dripping_bytes_is_dropped_after_the_network_timeout(
        database_url: str, nats: Any, tmp_path: Path) -> None:
    """One byte every 0.3 s never lets a single read time out; the PDU as a whole must."""
    add_facility(database_url, FACILITY, ae_title=AE_TITLE, quiet_period_s=3600)
    async with running_ingest(database_url, nats, tmp_path,
                              dicom_network_timeout_s=1.0) as svc:

        def drip() -> float:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", svc.dicom_port), timeout=10) as sock:
                try:
                    for byte in b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 300:
                        sock.sendall(bytes([byte]))
                        time.sleep(0.3)
                        if time.monotonic() - started > 15:
                            break
                except OSError:  # reset by the SCP
                    pass
            return time.monotonic() - started

        elapsed = await asyncio.to_thread(drip)
        assert elapsed < 5, f"the dripping peer held its association for {elapsed:.1f} s"
        assert await asyncio.to_thread(echo, svc) == 0


async def test_every_pydicom_test_file(ingest: Ingest) -> None:
    """Each file is stored byte-exact or refused with a specific status; echo still answers."""
    outcomes: dict[str, int | None] = {}
    blobs = {p: Path(p).read_bytes() for p in PYDICOM_FILES}  # noqa: ASYNC240 - small files
    for path, blob in blobs.items():
        try:
            (rsp,) = await asyncio.to_thread(send, ingest, [blob])
            outcomes[path] = status_of(rsp)
        except ContextRejected as exc:  # not a storage SOP class (DICOMDIR): refused earlier
            outcomes[path] = -exc.result
    assert set(outcomes.values()) <= {0x0000, 0xA900, 0xC000, -3}, outcomes
    print({hex(k) if k >= 0 else "context rejected": list(outcomes.values()).count(k)
           for k in set(outcomes.values())})
    assert list(outcomes.values()).count(0) >= 50
    first_sent: dict[str, bytes] = {}  # variants of one image share a SOP Instance UID:
    for path in (p for p, s in outcomes.items() if s == 0):  # later ones are duplicates
        sent = prepare(blobs[path])
        first_sent.setdefault(sent.sop_instance_uid, sent.dataset)
    for sop_instance_uid, dataset in first_sent.items():
        assert prepare(ingest.object_bytes(sop_instance_uid)).dataset == dataset
    (n,), = ingest.rows("select count(*) from instances")
    assert n == len(first_sent) >= 40
    refused = {Path(p).name: s for p, s in outcomes.items() if s != 0}
    assert refused["README.txt"] == 0xC000
    assert refused["DICOMDIR"] == -3  # Media Storage Directory: abstract syntax not supported
    assert refused.get("rtplan_truncated.dcm", 0) in (0, 0xC000, 0xA900)
    assert await asyncio.to_thread(echo, ingest) == 0


def echo(ingest: Ingest) -> int:
    with ingest.scu([]) as scu:
        return scu.echo()


def test_hand_encodings_match_pynetdicom() -> None:
    """The hot-path encoders write exactly what pynetdicom's encoders write."""
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import create_file_meta, encode_file_meta
    from pynetdicom.pdu import P_DATA_TF

    from ingest_svc.dimse.codec import Command, command_pdus, encode_response, file_header

    cls, sop, ts = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.1"
    meta = create_file_meta(sop_class_uid=cls, sop_instance_uid=sop, transfer_syntax=ts)
    assert file_header(cls, sop, ts) == b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    request = Command(0x0001, 7, cls, sop, 0x0000)
    for status, comment, offending in [(0x0000, "", ()),
                                       (0xA900, "StudyInstanceUID is missing", (0x0020000D,))]:
        primitive = C_STORE()
        primitive.MessageIDBeingRespondedTo, primitive.Status = 7, status
        primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = cls, sop
        if comment:
            primitive.ErrorComment, primitive.OffendingElement = comment, list(offending)
        message = C_STORE_RSP()
        message.primitive_to_message(primitive)
        for max_pdu in (0, 16382, 40):
            expected = b""
            for p_data in message.encode_msg(3, max_pdu):
                pdu = P_DATA_TF()
                pdu.from_primitive(p_data)
                expected += bytes(pdu.encode())
            assert command_pdus(3, encode_response(request, status, comment, offending),
                                max_pdu) == expected
