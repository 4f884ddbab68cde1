"""The zero-trust mesh as `sidecar up` starts it, attacked from outside: every gRPC port refuses
plaintext, certificate-less and foreign-CA clients; a service's certificate is refused on a
method it may not call (audited); a PACS adapter's credential stores only into its facility, may
not search, and stops working once revoked; reflection is off; the keys sit in a 0700 folder."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.sidecar.ingest.v1 import ingest_service_pb2 as ingest_pb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from protos.sidecar.normalizer.v1 import normalizer_service_pb2 as normalizer_pb
from protos.sidecar.normalizer.v1 import normalizer_service_pb2_grpc as normalizer_grpc
from protos.sidecar.workflow.v1 import operations_service_pb2 as ops_pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as ops_grpc
from sidecar_core.security import pki, session_tokens
from sidecar_core.security.identity import Identity
from sidecar_core.security.mesh_tls import MeshCredentials, from_folder
from tests.acceptance.stack import Stack, add_facilities, run_cli
from tests.helpers import ct_slice, to_bytes
from tests.security.conftest import EdgeStack

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

GRPC_PORTS = ("ingest", "workflow", "normalizer")
HEALTH = health_pb2.HealthCheckRequest(service="")


@pytest.fixture(scope="module")
def stack(shared_edge_stack: EdgeStack) -> Stack:
    """The shared `sidecar up` of the edge modules (its mesh is what any `sidecar up` makes),
    with two facilities of this module's."""
    add_facilities(shared_edge_stack, "sec_a", "sec_b")
    return shared_edge_stack


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=10).status)


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    with channel, pytest.raises(grpc.RpcError) as failed:
        _health(channel)
    return failed.value


@pytest.mark.parametrize("port", GRPC_PORTS)
def test_plaintext_and_certificate_less_clients_are_refused(stack: Stack, port: str) -> None:
    address = stack.address(port)
    assert _refused(grpc.insecure_channel(address)).code() == grpc.StatusCode.UNAVAILABLE
    ca = (stack.data_dir / "tls" / "ca.crt").read_bytes()
    no_cert = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca))
    assert _refused(no_cert).code() == grpc.StatusCode.UNAVAILABLE
    with stack.channel(port) as channel:  # the operator's credential: the same port answers
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("port", GRPC_PORTS)
def test_a_certificate_from_another_ca_is_refused(stack: Stack, port: str,
                                                  tmp_path: Path) -> None:
    """A client that made its own CA and a certificate naming the gateway gets nowhere."""
    pki.ensure_mesh(tmp_path / "tls")
    forged = from_folder(tmp_path / "tls", "gateway")
    ca = (stack.data_dir / "tls" / "ca.crt").read_bytes()
    impostor = MeshCredentials(ca, forged.cert, forged.key)
    failed = _refused(impostor.channel(stack.address(port)))
    assert failed.code() == grpc.StatusCode.UNAVAILABLE


def _denials(stack: Stack, method: str) -> list[tuple[str, dict[str, str]]]:
    return [(actor, context) for actor, context in stack.sql(
        "SELECT actor, context FROM audit_events WHERE type = "
        "'security.permission_denied' AND context->>'method' = %s", method)]


def test_a_service_certificate_is_refused_on_a_method_it_may_not_call(stack: Stack) -> None:
    """The preprocess worker's own certificate may not run the operations console, and the
    hl7 listener's may not store DICOM: PERMISSION_DENIED, audited with who and what."""
    preprocess = stack.credentials("preprocess")
    with preprocess.channel(stack.address("workflow")) as channel, \
            pytest.raises(grpc.RpcError) as failed:
        ops_grpc.OperationsServiceStub(channel).ListDeadLetters(
            ops_pb.ListDeadLettersRequest(), timeout=10)
    assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "service preprocess may not call" in (failed.value.details() or "")
    method = "/sidecar.workflow.v1.OperationsService/ListDeadLetters"
    denials = _denials(stack, method)
    assert any(c["identity"].endswith("/service/preprocess") for _, c in denials), denials
    assert all(actor == "workflow_svc" for actor, _ in denials)

    with stack.credentials("hl7").channel(stack.address("ingest")) as channel, \
            pytest.raises(grpc.RpcError) as failed:
        ingest_grpc.IngestServiceStub(channel).IngestInstances(
            ingest_pb.IngestInstancesRequest(facility="sec_a"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _denials(stack, "/sidecar.ingest.v1.IngestService/IngestInstances")


def test_the_normalizer_contract_is_for_operators_only(stack: Stack) -> None:
    """The gateway's certificate gets no answer from the in-mesh NormalizerService."""
    request = normalizer_pb.DescribeNormalizerRequest()
    with stack.credentials("gateway").channel(stack.address("normalizer")) as channel, \
            pytest.raises(grpc.RpcError) as failed:
        normalizer_grpc.NormalizerServiceStub(channel).DescribeNormalizer(request, timeout=10)
    assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _denials(stack, "/sidecar.normalizer.v1.NormalizerService/DescribeNormalizer")
    with stack.channel("normalizer") as channel:  # the operator's: answered
        reply = normalizer_grpc.NormalizerServiceStub(channel).DescribeNormalizer(
            request, timeout=10)
    assert reply.model_names


def test_reflection_is_off_by_default(stack: Stack) -> None:
    with stack.channel("ingest") as channel, pytest.raises(grpc.RpcError) as failed:
        list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_key_folder_is_private_and_kept(stack: Stack) -> None:
    tls = stack.data_dir / "tls"
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    keys = sorted(tls.glob("*.key"))
    assert {k.stem for k in keys} >= {"ca", "workflow", "ingest", "gateway", "operator"}
    assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    before = (tls / "ca.crt").read_bytes()
    done = stack.cli("tls", "init")  # what `sidecar up` does on every start
    assert done.returncode == 0, done.stderr
    assert "all current" in done.stdout
    assert (tls / "ca.crt").read_bytes() == before


def _instance(facility_seed: int) -> bytes:
    study = f"1.2.826.0.1.3680043.8.498.{facility_seed}"
    return to_bytes(ct_slice(study, f"{study}.1", z=0.0, rows=64, cols=64))


@pytest.fixture(scope="module")
def adapter(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "pacs-a"
    done = stack.cli("adapter", "add", "pacs-a", "--facility", "sec_a", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_an_adapter_stores_into_its_own_facility_only(stack: Stack, adapter: Path) -> None:
    assert stat.S_IMODE(os.stat(adapter).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(adapter / "adapter.key").st_mode) == 0o600
    creds = from_folder(adapter)
    assert creds.identity == Identity("adapter", "pacs-a", "sec_a")
    with creds.channel(stack.address("ingest")) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        item = ingest_pb.IngestInstancesRequestItem(dicom=_instance(9101))
        with pytest.raises(grpc.RpcError) as failed:
            stub.IngestInstances(ingest_pb.IngestInstancesRequest(
                facility="sec_b", items=[item]), timeout=30)
        assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "sec_b" in (failed.value.details() or "")
        # naming its own facility, or none: stored into sec_a
        reply = stub.IngestInstances(ingest_pb.IngestInstancesRequest(items=[item]), timeout=30)
        assert [r.outcome for r in reply.results] == [ingest_pb.INSTANCE_OUTCOME_STORED]
        with pytest.raises(grpc.RpcError) as searched:
            stub.SearchStudies(ingest_pb.SearchStudiesRequest(), timeout=10)
        assert searched.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = stack.sql("SELECT f.name FROM studies s JOIN facilities f ON f.id = s.facility_id "
                     "WHERE s.study_instance_uid = %s", "1.2.826.0.1.3680043.8.498.9101")
    assert rows == [("sec_a",)]
    denied = [c for _, c in _denials(stack, "IngestInstances")] + [
        c for _, c in stack.sql(
            "SELECT actor, context FROM audit_events WHERE type = "
            "'security.permission_denied' AND context->>'facility' = 'sec_b'")]
    assert any(c.get("identity", "").endswith("/adapter/sec_a/pacs-a") for c in denied)


def test_sidecar_ingest_with_an_adapter_credential(stack: Stack, adapter: Path,
                                                   tmp_path: Path) -> None:
    (tmp_path / "one.dcm").write_bytes(_instance(9102))
    base = ["ingest", str(tmp_path), "--via", "grpc", "--target", stack.address("ingest"),
            "--credentials", str(adapter)]
    refused = run_cli(*base, "--facility", "sec_b")
    assert refused.returncode != 0
    assert "PERMISSION_DENIED" in refused.stderr or "may not send" in refused.stderr, \
        refused.stderr
    done = run_cli(*base, "--facility", "sec_a", "--complete")
    assert done.returncode == 0, done.stderr


def test_a_revoked_adapter_is_refused(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "pacs-r"
    assert stack.cli("adapter", "add", "pacs-r", "--facility", "sec_b", "--out",
                     str(out)).returncode == 0
    creds = from_folder(out)
    with creds.channel(stack.address("ingest")) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        item = ingest_pb.IngestInstancesRequestItem(dicom=_instance(9103))
        stub.IngestInstances(ingest_pb.IngestInstancesRequest(items=[item]), timeout=30)
        done = stack.cli("adapter", "revoke", "pacs-r")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 15
        code = None
        while time.monotonic() < deadline:
            try:
                stub.IngestInstances(ingest_pb.IngestInstancesRequest(items=[item]), timeout=30)
            except grpc.RpcError as exc:
                code = exc.code()
                assert "revoked" in (exc.details() or "")
                break
            time.sleep(0.5)
        assert code == grpc.StatusCode.PERMISSION_DENIED
    listed = stack.cli("adapter", "list")
    assert any(line.startswith("pacs-r\t") and "revoked" in line
               for line in listed.stdout.splitlines()), listed.stdout
    events = stack.sql("SELECT type FROM audit_events WHERE type LIKE "
                       "'security.credential_%%' AND context->>'name' = 'pacs-r'")
    assert sorted(e for (e,) in events) == ["security.credential_issued",
                                           "security.credential_revoked"]


def test_session_tokens_are_eddsa_and_the_verifiers_hold_the_public_key(stack: Stack) -> None:
    """`sidecar up` made the token key pair before the services started: the gateway signs
    with DATA_DIR/token-signing.key (0600), and the workflow service, which verifies with
    token-signing.pub only, accepts the gateway's tokens (the worklist goes through it)."""
    private = stack.data_dir / session_tokens.SIGNING_KEY_FILE
    public = stack.data_dir / session_tokens.PUBLIC_KEY_FILE
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and public.exists()
    [key] = session_tokens.read_public_keys(public)
    token = stack.login()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == session_tokens.key_id(key)
    with stack.client(token) as client:
        assert client.get("/api/v1/studies").status_code == 200
    assert not (stack.data_dir / session_tokens.SECRET_FILE).exists()  # no shared secret
