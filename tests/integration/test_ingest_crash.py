"""SIGKILL of ingest mid-association: nothing acknowledged is lost, nothing is half-indexed."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from pydicom.uid import generate_uid

from protos.sidecar.ingest.v1 import ingest_service_pb2 as pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from sidecar_core.dicom.store_scu import Outgoing, StoreSCU, prepare, status_of
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.storage.packstore import PackKey
from tests import pki as test_pki
from tests.helpers import add_facility, ct_slice, to_bytes
from tests.servers import NatsServer, free_port, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AE_TITLE = "CRASH_PACS"
SLICES = 80  # 64x64 CT slices of one study


class IngestProcess:
    """`python -m ingest_svc.main` configured only through SIDECAR_* environment variables."""

    def __init__(self, database_url: str, nats_url: str, data_dir: Path) -> None:
        self.dicom_port, self.grpc_port = free_port(), free_port()
        NatsServer.install(data_dir)  # its certificate and NATS seed, as `sidecar up` makes
        self.env = {**os.environ, "SIDECAR_DATABASE_URL": database_url,
                    "SIDECAR_NATS_URL": nats_url, "SIDECAR_DATA_DIR": str(data_dir),
                    "SIDECAR_INGEST_PORT": str(self.grpc_port),
                    "SIDECAR_DICOM_PORT": str(self.dicom_port), "SIDECAR_FSYNC": "true",
                    "SIDECAR_COMPLETION_POLL_S": "0.1", "TCP_NODELAY": "1"}
        self.log = data_dir.parent / "ingest.log"
        test_pki.install(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, max_file_bytes: int | None = None) -> None:
        """`max_file_bytes`: RLIMIT_FSIZE of the process, a disk that is full for its files
        (writes past it fail with EFBIG; Python ignores SIGXFSZ)."""

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ingest_svc.main"], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=log)
        if max_file_bytes is not None:  # set from outside: a preexec_fn can deadlock the
            # fork of a process with threads (gRPC's), and nothing is written this early
            resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE,
                             (max_file_bytes, max_file_bytes))
        wait_port(self.grpc_port, 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


@pytest.fixture()
def ingest_process(database_url: str, nats: Any, tmp_path: Path) -> Iterator[IngestProcess]:
    # no quiet-period completion during the outage: the sender completes the study explicitly
    add_facility(database_url, "crash", ae_title=AE_TITLE, quiet_period_s=3600)
    proc = IngestProcess(database_url, nats.url, tmp_path / "data")
    try:
        yield proc
    finally:
        proc.kill()


def send_all(proc: IngestProcess, items: list[Outgoing],
             kill_after: int | None = None) -> list[str]:
    """Sends until done or the peer dies; returns the SOP Instance UIDs answered 0x0000."""
    acked: list[str] = []
    killer = threading.Timer(0.005, proc.kill)  # the next C-STORE is in flight when it fires
    try:
        with StoreSCU("127.0.0.1", proc.dicom_port, AE_TITLE, "SIDECAR",
                      [i.context for i in items], timeout_s=10) as scu:
            for item in items:
                if kill_after is not None and len(acked) == kill_after:
                    killer.start()
                status = status_of(scu.store(item))
                if status is None:
                    break
                assert status == 0x0000
                acked.append(item.sop_instance_uid)
    except Exception:  # the association dies with the process
        if kill_after is None:
            raise
    if killer.is_alive() or kill_after is not None:
        killer.join()
    return acked


def check_consistent(database_url: str, data_dir: Path) -> dict[str, str]:
    """Every index row has its object (same content hash) and counts match the rows."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select sop_instance_uid, object_key from instances").fetchall()
        mismatched = conn.execute(
            "select s.id from studies s where s.instance_count <> "
            "(select count(*) from instances i where i.study_id = s.id)").fetchall()
    store = ObjectStore(data_dir / "objects", fsync=False)
    for _, key in rows:
        assert store.exists(key), f"index row without its object: {key}"
        data = store.get(key)  # raises unless the bytes match the key's length and digest
        assert key.endswith("/" + hashlib.sha256(data).hexdigest())
    assert not mismatched, "study instance_count disagrees with its indexed instances"
    return dict(rows)


def test_sigkill_mid_association_loses_nothing_acknowledged(
        ingest_process: IngestProcess, database_url: str, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    items = [prepare(to_bytes(ct_slice(study, series, z=float(z), rows=64, cols=64)))
             for z in range(SLICES)]
    ingest_process.start()
    acked = send_all(ingest_process, items, kill_after=SLICES // 3)
    assert ingest_process.proc is None, "the process was not killed mid-stream"
    assert SLICES // 3 <= len(acked) < SLICES

    indexed = check_consistent(database_url, tmp_path / "data")
    missing = [uid for uid in acked if uid not in indexed]
    assert not missing, f"acknowledged but not indexed after SIGKILL: {missing}"

    ingest_process.start()  # restart on the same database and data dir, re-send everything
    assert len(send_all(ingest_process, items)) == SLICES
    with test_pki.channel(f"127.0.0.1:{ingest_process.grpc_port}") as channel:
        done = pb_grpc.IngestServiceStub(channel).CompleteStudy(
            pb.CompleteStudyRequest(facility="crash", study_instance_uid=study), timeout=30)
    assert done.completed_count == 1
    time.sleep(0.5)  # nothing further may happen after completion
    with psycopg.connect(database_url) as conn:
        types = [r[0] for r in conn.execute("select type from audit_events order by seq")]
        study_row = conn.execute("select instance_count, completion_count, ingest_status "
                                 "from studies").fetchall()
    ingest_process.stop()
    assert study_row == [(SLICES, 1, "complete")]
    assert types.count("study.received") == 1 and "study.updated" not in types
    assert types.count("study.duplicate_seen") >= len(acked)
    assert len(check_consistent(database_url, tmp_path / "data")) == SLICES
    assert_operator_verify(database_url, tmp_path / "data")


def assert_operator_verify(database_url: str, data_dir: Path) -> None:
    """`sidecar objects verify` finds every object intact, then reports one damaged record."""
    command = [sys.executable, "-m", "sidecar_app.cli", "objects", "verify",
               "--database-url", database_url, "--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SLICES} objects checked" in done.stdout and "0 missing, 0 damaged" in done.stdout
    with psycopg.connect(database_url) as conn:
        (key,), = conn.execute("select object_key from instances limit 1").fetchall()
    k = PackKey.parse(key)
    with (data_dir / "objects" / "packs" / f"{k.segment}.pack").open("r+b") as fh:
        fh.seek(k.offset + k.length // 2)
        byte = fh.read(1)
        fh.seek(k.offset + k.length // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert "1 damaged" in done.stdout and "damaged: study" in done.stdout and key in done.stdout


def test_a_full_disk_refuses_with_out_of_resources_and_loses_nothing(
        ingest_process: IngestProcess, database_url: str, tmp_path: Path) -> None:
    """No pack segment can grow past 3 MB (RLIMIT_FSIZE; space allocated 1 MB at a time):
    every later C-STORE gets 0xA700 naming the cause and is audited, the acknowledged ones are
    intact, the association and C-ECHO keep working, and the gRPC path says UNAVAILABLE."""
    study, series = generate_uid(), generate_uid()
    items = [prepare(to_bytes(ct_slice(study, series, z=float(z), rows=512, cols=512)))
             for z in range(12)]  # 0.5 MB each: five fit in 3 MB
    ingest_process.env["SIDECAR_PACK_ALLOCATE_MB"] = "1"
    ingest_process.start(max_file_bytes=3 << 20)
    statuses = []
    with StoreSCU("127.0.0.1", ingest_process.dicom_port, AE_TITLE, "SIDECAR",
                  [i.context for i in items], timeout_s=30) as scu:
        for item in items:
            statuses.append(scu.store(item))
        assert scu.echo() == 0x0000
    codes = [status_of(r) for r in statuses]
    stored = codes.count(0x0000)
    assert 3 <= stored < 12 and codes == [0x0000] * stored + [0xA700] * (12 - stored), codes
    assert statuses[-1].ErrorComment == \
        "OUT_OF_RESOURCES: object store: File too large; retry later"
    indexed = check_consistent(database_url, tmp_path / "data")
    assert sorted(indexed) == sorted(i.sop_instance_uid for i in items[:stored])
    batch = pb.IngestInstancesRequest(facility="crash", items=[
        pb.IngestInstancesRequestItem(dicom=to_bytes(
            ct_slice(study, series, z=100.0 + z, rows=512, cols=512))) for z in range(40)])
    with test_pki.channel(f"127.0.0.1:{ingest_process.grpc_port}",
                               options=[("grpc.max_send_message_length", 64 << 20)]) as channel, \
            pytest.raises(grpc.RpcError) as err:
        pb_grpc.IngestServiceStub(channel).IngestInstances(batch, timeout=60)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "File too large" in err.value.details() and "send it again" in err.value.details()
    with psycopg.connect(database_url) as conn:
        failed = conn.execute("select error_class, context->>'source' from audit_events "
                              "where type = 'study.receive_failed'").fetchall()
    assert failed.count(("STORAGE_FAILED", "dimse")) == 12 - stored
    assert ("STORAGE_FAILED", "grpc") in failed


def _own_database_and_ingest(nats: Any, tmp_path: Path, quiet_period_s: float,
                             **env: str) -> tuple[Any, str, IngestProcess, list[Any]]:
    """A PostgreSQL of the test's own (so the test can stop it), migrated, with the facility
    `crash`; an ingest process on it (not started) and six 64² CT slices of one study."""
    import pgserver

    from sidecar_core.store.migrate import upgrade

    pg = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    url = pg.get_uri()
    try:
        upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
        add_facility(url, "crash", ae_title=AE_TITLE, quiet_period_s=quiet_period_s)
    except BaseException:
        pg.cleanup()
        raise
    proc = IngestProcess(url, nats.url, tmp_path / "data")
    proc.env.update(env)
    study, series = generate_uid(), generate_uid()
    items = [prepare(to_bytes(ct_slice(study, series, z=float(z), rows=64, cols=64)))
             for z in range(6)]
    return pg, url, proc, items


def test_a_database_outage_refuses_with_out_of_resources_then_recovers(
        nats: Any, tmp_path: Path) -> None:
    """PostgreSQL stopped mid-association: C-STOREs get 0xA700 naming the index, C-ECHO still
    answers, nothing is half-indexed; their audit events wait in the local spool. Once
    PostgreSQL is back the same association stores the refused objects again and the spooled
    events are stored with the time they happened."""
    import pgserver

    pg, url, proc, items = _own_database_and_ingest(
        nats, tmp_path, 3600, SIDECAR_AUDIT_SPOOL_REPLAY_S="0.2")
    try:
        spool = tmp_path / "data" / "audit-spool" / "ingest_svc"
        proc.start()
        try:
            with StoreSCU("127.0.0.1", proc.dicom_port, AE_TITLE, "SIDECAR",
                          [i.context for i in items], timeout_s=30) as scu:
                assert [status_of(scu.store(i)) for i in items[:2]] == [0x0000, 0x0000]
                pg.cleanup()  # the database goes away
                down = datetime.now(UTC)
                during = [scu.store(i) for i in items[2:4]]
                assert scu.echo() == 0x0000
                # The refusals' audit events are spooled on the service's loop, possibly just
                # after the responses; a replay attempt may already have moved them from
                # pending.jsonl to a replay-*.jsonl file (it fails while the database is down).
                def spooled() -> int:
                    return sum(len(f.read_text().splitlines()) for f in spool.glob("*.jsonl"))
                deadline = time.monotonic() + 10
                while spooled() < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert spooled() == 2
                back = datetime.now(UTC)
                pg = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
                after = [status_of(scu.store(i)) for i in items[2:]]
            deadline = time.monotonic() + 15
            while any(spool.glob("*.jsonl")) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.stop()
        assert [status_of(r) for r in during] == [0xA700, 0xA700]
        assert all(r.ErrorComment.startswith("OUT_OF_RESOURCES: index unavailable: ")
                   for r in during), [r.ErrorComment for r in during]
        assert after == [0x0000] * 4
        indexed = check_consistent(url, tmp_path / "data")
        assert sorted(indexed) == sorted(i.sop_instance_uid for i in items)
        assert not any(spool.glob("*.jsonl")), "spooled audit events were not replayed"
        with psycopg.connect(url) as conn:
            spooled = conn.execute(
                "select at, error_message, context->>'source' from audit_events "
                "where type = 'study.receive_failed' and error_class = 'STORAGE_FAILED' "
                "order by at").fetchall()
        assert len(spooled) == 2 and all(down <= at <= back for at, _, _ in spooled), spooled
        assert all(source == "dimse" and "index unavailable" in message
                   for _, message, source in spooled)
    finally:
        pg.cleanup()


def test_an_outage_longer_than_the_quiet_period_does_not_complete_a_half_sent_study(
        nats: Any, tmp_path: Path) -> None:
    """The index goes away for longer than the facility's quiet period while a study is being
    sent. The instances it refused are sent again once it is back; the study must not be
    completed on the part stored before the outage in between (its quiet period counts from
    the last refusal): one completion, with every instance, and no reopening."""
    import pgserver

    quiet = 4.0
    pg, url, proc, items = _own_database_and_ingest(
        nats, tmp_path, quiet, SIDECAR_COMPLETION_POLL_S="0.1")
    try:
        proc.start()
        try:
            with StoreSCU("127.0.0.1", proc.dicom_port, AE_TITLE, "SIDECAR",
                          [i.context for i in items], timeout_s=30) as scu:
                assert [status_of(scu.store(i)) for i in items[:2]] == [0x0000, 0x0000]
                pg.cleanup()  # the database goes away
                time.sleep(quiet + 0.5)  # the stored part is now older than the quiet period
                assert [status_of(scu.store(i)) for i in items[2:4]] == [0xA700, 0xA700]
                pg = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
                time.sleep(0.5)  # the completion loop sees the database again
                with psycopg.connect(url) as conn:
                    (status,), = conn.execute("select ingest_status from studies").fetchall()
                assert status == "receiving", "completed on the part stored before the outage"
                assert [status_of(scu.store(i)) for i in items[2:]] == [0x0000] * 4
            deadline = time.monotonic() + quiet + 15
            while time.monotonic() < deadline:
                with psycopg.connect(url) as conn:
                    rows = conn.execute("select ingest_status, instance_count, "
                                        "completion_count from studies").fetchall()
                if rows == [("complete", 6, 1)]:
                    break
                time.sleep(0.2)
        finally:
            proc.stop()
        assert rows == [("complete", 6, 1)]
        with psycopg.connect(url) as conn:
            types = [r[0] for r in conn.execute("select type from audit_events")]
        assert types.count("study.received") == 1
        assert "study.reopened" not in types and "study.updated" not in types
    finally:
        pg.cleanup()
