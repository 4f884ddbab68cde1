"""Every port `sidecar up` opens, reached as the README says: gRPC health (mTLS) on each
gRPC port, C-ECHO / C-STORE with dcmtk, /healthz, the normaliser conformance check."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.acceptance.stack import Stack, run_cli

GRPC_PORTS = {
    "ingest": "sidecar.ingest.v1.IngestService",
    "workflow": "sidecar.workflow.v1.WorkflowService",
    "normalizer": "sidecar.normalizer.v1.NormalizerService",
}
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
# A calling AE title no facility has (and no other module on the shared stack calls with).
STRANGER = "PORTS_STRANGER"


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"/usr/bin/{tool}", *args], capture_output=True, text=True,
                          timeout=120, env=DCMTK_ENV)


@pytest.fixture(scope="module")
def brain_mr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "brain"
    done = run_cli("synth", str(out), "--kind", "brain-mr", "--seed", "16")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("port", sorted(GRPC_PORTS))
def test_grpc_health_on_every_grpc_port_over_mtls(stack: Stack, port: str) -> None:
    """With the operator credential `sidecar up` made (reflection is off unless
    SIDECAR_GRPC_REFLECTION=1: tests/security/test_mesh_up.py)."""
    with stack.channel(port) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", GRPC_PORTS[port]):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_grpc_health_of_an_unknown_service_is_not_found(stack: Stack) -> None:
    with stack.channel("ingest") as channel, \
            pytest.raises(grpc.RpcError) as failed:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def test_c_echo_from_a_registered_ae_title(stack: Stack) -> None:
    done = dcmtk("echoscu", "-aet", stack.north_ae, "-aec", "SIDECAR", "127.0.0.1",
                 str(stack.ports["dicom"]))
    assert done.returncode == 0, done.stdout + done.stderr


def test_unknown_calling_ae_title_is_rejected_and_audited(stack: Stack) -> None:
    done = dcmtk("echoscu", "-aet", STRANGER, "-aec", "SIDECAR", "127.0.0.1",
                 str(stack.ports["dicom"]))
    assert done.returncode != 0
    assert "Association Rejected" in done.stdout + done.stderr
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    rows = stack.sql("select error_class from audit_events where type = "
                     "'association.rejected' and context->>'calling_ae' = %s", STRANGER)
    assert rows and rows[0][0] == "ASSOCIATION_REJECTED"


def test_c_store_with_storescu_lands_in_the_facility(stack: Stack, brain_mr: Path) -> None:
    files = sorted(str(p) for p in brain_mr.glob("**/*.dcm"))
    done = dcmtk("storescu", "-aet", stack.north_ae, "-aec", "SIDECAR", "127.0.0.1",
                 str(stack.ports["dicom"]), *files)
    assert done.returncode == 0, done.stdout + done.stderr
    uid = pydicom_study_uid(files[0])
    rows = stack.sql("select f.name, s.instance_count from studies s join facilities f on "
                     "f.id = s.facility_id where s.study_instance_uid = %s", uid)
    assert rows == [(stack.north, len(files))]


def test_c_store_from_an_unknown_ae_title_stores_nothing(stack: Stack, tmp_path: Path) -> None:
    one = tmp_path / "one.dcm"
    done = run_cli("synth", str(tmp_path / "s"), "--kind", "brain-mr", "--seed", "12")
    assert done.returncode == 0, done.stderr
    first = sorted((tmp_path / "s").glob("**/*.dcm"))[0]
    one.write_bytes(first.read_bytes())
    done = dcmtk("storescu", "-aet", STRANGER, "-aec", "SIDECAR", "127.0.0.1",
                 str(stack.ports["dicom"]), str(one))
    assert done.returncode != 0
    assert stack.sql("select 1 from studies where study_instance_uid = %s",
                     pydicom_study_uid(str(one))) == []


def pydicom_study_uid(path: str) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_healthz_is_ready_with_every_dependency(stack: Stack) -> None:
    reply = httpx.get(f"{stack.base_url}/healthz", timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "ok"
    assert {"workflow", "ingest", "normalizer", "preprocess", "triton", "nats"} <= \
        set(body["dependencies"])
    assert all(d["status"] == "ok" for d in body["dependencies"].values())


def test_normalizer_check_passes_on_the_normalizer_port(stack: Stack) -> None:
    done = run_cli("normalizer", "check", stack.address("normalizer"), "--model",
                   "chest_ct_nodules", "--credentials", str(stack.data_dir / "tls"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks passed for chest_ct_nodules" in done.stdout
    assert "FAIL" not in done.stdout


def test_normalizer_check_fails_for_a_model_it_does_not_serve(stack: Stack) -> None:
    done = run_cli("normalizer", "check", stack.address("normalizer"), "--model", "no_such_model",
                   "--credentials", str(stack.data_dir / "tls"))
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "no_such_model" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_c_store_of_an_invalid_uid_is_answered_a900(stack: Stack, tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.03.4"  # PS3.5 9.1
    ds.save_as(tmp_path / "bad.dcm")
    done = dcmtk("storescu", "-v", "-aet", stack.north_ae, "-aec", "SIDECAR", "127.0.0.1",
                 str(stack.ports["dicom"]), str(tmp_path / "bad.dcm"))
    said = done.stdout + done.stderr
    assert "Error: DataSetDoesNotMatchSOPClass" in said, said  # dcmtk's name for 0xA900
    assert stack.sql("select 1 from studies where study_instance_uid = %s",
                     ds.StudyInstanceUID) == []


def listening() -> dict[int, set[str]]:
    """Port → the local addresses listening on it (from /proc/net/tcp and tcp6)."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            found.setdefault(int(port, 16), set()).add(address)
    return found


def test_every_port_binds_loopback_only(stack: Stack) -> None:
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    sockets = listening()
    for name, port in stack.ports.items():
        if name == "dicom-tls":  # only with a certificate: tests/security/test_dicom_tls_up.py
            assert port not in sockets, "DICOM TLS listens without a certificate"
            continue
        assert port in sockets, f"{name} port {port} does not listen"
        assert sockets[port] <= loopback, (name, port, sockets[port])


def test_embedded_triton_and_nats_answer_on_their_ports(stack: Stack) -> None:
    ready = httpx.get(f"http://127.0.0.1:{stack.ports['triton-http']}/v2/health/ready",
                      timeout=30)
    assert ready.status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports['triton-metrics']}/metrics", timeout=30)
    assert metrics.status_code == 200 and "nv_inference" in metrics.text
    import socket

    with socket.create_connection(("127.0.0.1", stack.ports["nats"]), timeout=10) as nats:
        info = nats.recv(4096).decode()
    assert info.startswith("INFO ") and '"jetstream":true' in info.replace(" ", "")
