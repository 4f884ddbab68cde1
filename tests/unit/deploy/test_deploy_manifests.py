"""deploy/: the Kubernetes manifests against a fixed Kubernetes schema, the compose file against
the vendored compose-spec schema, and what they name (settings, modules, files) exists."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sidecar_core.security import identity
from sidecar_core.security.identity import SERVICES, Identity

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose.yaml"
KUBERNETES_VERSION = "1.30.0"
BIN = Path(sys.executable).parent
CERT_MANAGER = REPO / "deploy" / "cert-manager"
HEALTH_PROBE = "sidecar_core.serving.health_probe"
# The mTLS gRPC servers of the mesh and their ports.
GRPC_PORTS = {"workflow": 50052, "ingest": 50051, "normalizer": 50053}
SIDECAR_SERVICES = ("workflow", "ingest", "normalizer", "preprocess", "gateway", "hl7")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
TRITON_RELEASE = (25, 7)  # NVIDIA's August 2025 bulletin: Python backend fixes from r25.07


def manifests() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_manifests_are_valid_kubernetes() -> None:
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    done = subprocess.run([str(BIN / "kubernetes-validate"), "-k", KUBERNETES_VERSION,
                           "--strict", "--quiet", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    schema = REPO / "deploy" / "schemas" / "compose-spec.json"
    done = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(schema),
                           str(COMPOSE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_has_probes_resources_and_its_configuration() -> None:
    deployments = of_kind("Deployment")
    assert set(deployments) == {"ingest", "workflow", "preprocess", "normalizer", "gateway", "hl7",
                                "triton", "ohif"}
    for name, d in deployments.items():
        [c] = d["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{name} has no {probe}"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        if name == "triton":
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
            continue
        if name == "ohif":  # static files and a config: no database, bus or mesh secrets
            assert importlib.util.find_spec(c["command"][-1]) is not None
            continue
        assert {"configMapRef": {"name": "sidecar-config"}} in c["envFrom"]
        assert {"secretRef": {"name": "sidecar-secrets"}} in c["envFrom"]
        module = c["command"][-1]
        assert importlib.util.find_spec(module) is not None, module
    probed = {n for n, d in deployments.items()
              if HEALTH_PROBE in " ".join(d["spec"]["template"]["spec"]["containers"][0]
                                          ["readinessProbe"].get("exec", {}).get("command", []))}
    assert probed == set(GRPC_PORTS)
    gateway = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_nats_is_a_three_node_jetstream_cluster() -> None:
    nats = of_kind("StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    conf = of_kind("ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in conf and len(re.findall(r"nats://nats-\d", conf)) == 3
    config = of_kind("ConfigMap")["sidecar-config"]["data"]
    assert len(config["SIDECAR_NATS_URL"].split(",")) == 3
    assert config["SIDECAR_NATS_STREAM_REPLICAS"] == "3"


def _setting_names() -> set[str]:
    from ingest_svc.settings import IngestSettings
    from normalizer_svc.settings import NormalizerSettings
    from review_gateway.settings import GatewaySettings
    from workflow_svc.settings import WorkflowSettings

    return {f"SIDECAR_{field.upper()}" for cls in (IngestSettings, NormalizerSettings,
                                                  GatewaySettings, WorkflowSettings)
            for field in cls.model_fields}


@pytest.mark.parametrize("source", ["k8s", "compose"])
def test_every_sidecar_variable_is_a_real_setting(source: str) -> None:
    if source == "k8s":
        names = set(of_kind("ConfigMap")["sidecar-config"]["data"])
        names |= set(of_kind("Secret")["sidecar-secrets"]["stringData"])
    else:
        names = set(yaml.safe_load(COMPOSE.read_text())["x-sidecar"]["environment"])
    unknown = {n for n in names if n.startswith("SIDECAR_")} - _setting_names()
    assert not unknown, f"not settings of any service: {unknown}"


def test_the_dockerfile_copies_what_exists_and_runs_real_modules() -> None:
    text = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        if source != "pyproject.toml":
            assert (REPO / source).exists(), source
    assert {"sidecar", "triton"} <= set(re.findall(r"^FROM \S+ AS (\w+)", text, re.M))
    compose = yaml.safe_load(COMPOSE.read_text())
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, (name, command)


def _container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("name", SIDECAR_SERVICES)
def test_every_service_mounts_its_mesh_secret_and_names_its_files(name: str) -> None:
    pod = of_kind("Deployment")[name]["spec"]["template"]["spec"]
    c = _container(of_kind("Deployment")[name])
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v
               and not v["secret"]["secretName"].startswith("nats-seed-")  # its NATS user's
               and v["secret"]["secretName"] not in ("token-signing-key",  # the gateway's, below
                                                     "sidecar-edge-tls")}  # the edge's, below
    assert [s["secretName"] for s in secrets.values()] == [f"mesh-{name}"]
    [(volume, secret)] = secrets.items()
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume]
    assert mount["readOnly"] is True
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    root = mount["mountPath"]
    # cert-manager's kubernetes.io/tls layout
    assert env["SIDECAR_TLS_CA"] == f"{root}/ca.crt"
    assert env["SIDECAR_TLS_CERT"] == f"{root}/tls.crt"
    assert env["SIDECAR_TLS_KEY"] == f"{root}/tls.key"
    assert "SIDECAR_GRPC_REFLECTION" not in env
    assert "SIDECAR_GRPC_REFLECTION" not in of_kind("ConfigMap")["sidecar-config"]["data"]


def test_no_plaintext_grpc_probe_and_the_exec_probes_name_the_right_port() -> None:
    for name, d in of_kind("Deployment").items():
        c = _container(d)
        for probe in PROBES:
            assert "grpc" not in c[probe], (name, probe)
            command = c[probe].get("exec", {}).get("command", [])
            if name in GRPC_PORTS:
                assert command == ["python", "-m", HEALTH_PROBE, str(GRPC_PORTS[name])], name
                assert c[probe]["timeoutSeconds"] >= 5, (name, probe)
                assert {"containerPort": GRPC_PORTS[name], "name": "grpc"} in c["ports"]
            else:
                assert HEALTH_PROBE not in command, (name, probe)
    assert importlib.util.find_spec(HEALTH_PROBE) is not None


def _allowed_from(policy: dict, port: int) -> list[dict]:
    """The `from` peers of every ingress rule of `policy` that opens `port` ([{}]: anyone)."""
    peers: list[dict] = []
    for rule in policy["spec"].get("ingress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if not ports or port in ports:
            peers += rule.get("from") or [{}]
    return peers


def _selects(policy: dict, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    match = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in match.items()) and not selector.get(
        "matchExpressions")


def test_ingress_is_denied_by_default_and_triton_answers_the_normalizer_only() -> None:
    policies = of_kind("NetworkPolicy")
    deny = [p for p in policies.values()
            if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
            and not p["spec"].get("ingress")]
    assert deny, "no default-deny ingress policy"
    triton = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/part-of": "radiology-sidecar"}
    assert of_kind("Deployment")["triton"]["spec"]["template"]["metadata"]["labels"] == triton
    selecting = [p for p in policies.values() if _selects(p, triton) and p["spec"]["podSelector"]]
    assert selecting
    peers = [peer for p in selecting for port in (8000, 8001, 8002)
             for peer in _allowed_from(p, port)]
    assert peers and all(peer == {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "normalizer"}}} for peer in peers), peers
    rules = [rule for p in selecting for rule in p["spec"]["ingress"]]
    assert all([p["port"] for p in rule["ports"]] == [8001] for rule in rules)


def test_workflow_grpc_is_reachable_from_its_callers_only() -> None:
    policies = [p for p in of_kind("NetworkPolicy").values() if p["spec"]["podSelector"]
                and _selects(p, {"app.kubernetes.io/name": "workflow"})]
    names = {peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
             for p in policies for peer in _allowed_from(p, GRPC_PORTS["workflow"])}
    assert names == {"gateway", "hl7", None}  # None: the operator tooling label


def test_ingest_grpc_is_reachable_from_its_callers_only() -> None:
    """The gateway (STOW-RS, QIDO-RS, WADO-RS), the workflow (priors retrieved by WADO-RS),
    operator tooling and PACS adapters (policy.py)."""
    policies = [p for p in of_kind("NetworkPolicy").values() if p["spec"]["podSelector"]
                and _selects(p, {"app.kubernetes.io/name": "ingest"})]
    labels = [peer["podSelector"]["matchLabels"] for p in policies
              for peer in _allowed_from(p, GRPC_PORTS["ingest"])]
    assert sorted(tuple(sorted(m.items())) for m in labels) == sorted([
        (("app.kubernetes.io/name", "gateway"),), (("app.kubernetes.io/name", "workflow"),),
        (("radiology-sidecar/role", "operator"),), (("radiology-sidecar/role", "adapter"),)])


def _release(tag: str) -> tuple[int, int]:
    match = re.search(r"(\d{2})\.(\d{2})(?:-py3)?$", tag)
    assert match, f"no Triton release in {tag!r}"
    return int(match[1]), int(match[2])


def test_triton_is_a_release_with_the_2025_python_backend_fixes() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    [image] = re.findall(r"^ARG TRITON_IMAGE=(\S+)$", dockerfile, re.M)
    assert image.startswith("nvcr.io/nvidia/tritonserver:")
    assert _release(image) >= TRITON_RELEASE
    triton_images = [_container(of_kind("Deployment")["triton"])["image"],
                     yaml.safe_load(COMPOSE.read_text())["services"]["triton"]["image"]]
    for found in triton_images:
        assert _release(found) == _release(image), found
    for path in [*(REPO / "deploy").rglob("*.y*ml"), *(REPO / "deploy").rglob("*.md"),
                 REPO / "docs" / "deployment.md"]:
        for tag in re.findall(r"tritonserver:(\S+)", path.read_text()):
            assert _release(tag) >= TRITON_RELEASE, (path, tag)


def test_no_compose_port_is_published_on_every_interface() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published
    for name, port in published:
        assert isinstance(port, str), (name, port)
        host = port.rsplit(":", 2)[0] if port.count(":") >= 2 else ""
        assert host in ("127.0.0.1", "${SIDECAR_PUBLISH_ADDRESS:-127.0.0.1}"), (name, port)
    assert "SIDECAR_PUBLISH_ADDRESS" in COMPOSE.read_text().split("services:")[0]


@pytest.mark.parametrize("name", SIDECAR_SERVICES)
def test_every_compose_service_mounts_its_own_certificate(name: str) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    env = compose["x-sidecar"]["environment"]
    mounts = {v["target"]: v["source"] for v in compose["services"][name]["volumes"]}
    assert mounts[env["SIDECAR_TLS_CA"]] == "./.mesh/tls/ca.crt"
    assert mounts[env["SIDECAR_TLS_CERT"]] == f"./.mesh/tls/{name}.crt"
    assert mounts[env["SIDECAR_TLS_KEY"]] == f"./.mesh/tls/{name}.key"
    assert all(v["read_only"] for v in compose["services"][name]["volumes"])
    assert "deploy/.mesh" in (REPO / ".gitignore").read_text()


def _cert_manager() -> list[dict]:
    docs = []
    for path in sorted(CERT_MANAGER.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_cert_manager_issues_each_service_the_identity_the_mesh_expects() -> None:
    certs = {d["spec"]["secretName"]: d["spec"] for d in _cert_manager()
             if d["kind"] == "Certificate" and not d["spec"].get("isCA")}
    for name in SERVICES:
        spec = certs[f"mesh-{name}"]
        assert spec["uris"] == [identity.service(name).uri]
        assert "localhost" in spec["dnsNames"] and spec["ipAddresses"] == ["127.0.0.1"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
        assert spec["duration"] and spec["renewBefore"]
    for name in set(SIDECAR_SERVICES) & set(GRPC_PORTS):
        # what the others dial: SIDECAR_<NAME>_ADDRESS in the ConfigMap
        host = of_kind("ConfigMap")["sidecar-config"]["data"][
            f"SIDECAR_{name.upper()}_ADDRESS"].rsplit(":", 1)[0]
        assert host in certs[f"mesh-{name}"]["dnsNames"]
    # Every Secret a Deployment mounts is issued here.
    for name in SIDECAR_SERVICES:
        assert f"mesh-{name}" in certs
    operators = [Identity.parse(u) for spec in certs.values() for u in spec.get("uris", [])
                 if Identity.parse(u).kind == "operator"]
    assert operators
    for spec in certs.values():
        identities = [Identity.parse(u) for u in spec["uris"]]
        assert len(identities) == 1


def test_nats_requires_a_mesh_certificate_in_compose_and_kubernetes() -> None:
    """The bus is TLS with client certificates everywhere, as embedded (nats-server --tlsverify
    in compose, `tls { verify: true }` in the Kubernetes config, the mesh-nats Secret mounted)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    for name in ("nats-1", "nats-2", "nats-3"):
        command = compose["services"][name]["command"]
        assert "--tlsverify" in command and "--tlscacert" in command, name
        mounted = {v["target"] for v in compose["services"][name]["volumes"]
                   if isinstance(v, dict)}
        assert {"/etc/nats/tls/ca.crt", "/etc/nats/tls/tls.crt",
                "/etc/nats/tls/tls.key"} <= mounted, name
    [config] = [d for d in manifests() if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == "nats-config"]
    assert re.search(r"tls \{[^}]*verify: true", config["data"]["nats.conf"])
    [nats] = [d for d in manifests() if d["kind"] == "StatefulSet"
              and d["metadata"]["name"] == "nats"]
    volumes = nats["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "mesh-nats", "defaultMode": 0o440}} in volumes


def test_only_the_gateway_gets_the_token_signing_key() -> None:
    """EdDSA session tokens: the gateway alone mounts the signing key (Secret
    token-signing-key, SIDECAR_TOKEN_SIGNING_KEY); workflow and ingest verify with the public
    key only (ConfigMap token-public-keys, SIDECAR_TOKEN_PUBLIC_KEYS); no shared secret."""
    assert "SIDECAR_TOKEN_SECRET" not in of_kind("Secret")["sidecar-secrets"]["stringData"]
    assert "SIDECAR_TOKEN_SECRET" not in of_kind("ConfigMap")["sidecar-config"]["data"]
    assert "token-signing.pub" in of_kind("ConfigMap")["token-public-keys"]["data"]
    for name, d in of_kind("Deployment").items():
        pod = d["spec"]["template"]["spec"]
        [c] = pod["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        maps = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
        if name == "gateway":
            assert "token-signing-key" in secrets
            assert env["SIDECAR_TOKEN_SIGNING_KEY"] == "/etc/sidecar/token/token-signing.key"
        else:
            assert "token-signing-key" not in secrets, name
            assert "SIDECAR_TOKEN_SIGNING_KEY" not in env, name
        if name in ("workflow", "ingest"):
            assert "token-public-keys" in maps, name
            assert env["SIDECAR_TOKEN_PUBLIC_KEYS"] == "/etc/sidecar/token/token-signing.pub"
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "SIDECAR_TOKEN_SECRET" not in compose["x-sidecar"]["environment"]
    for name, service in compose["services"].items():
        sources = {v["source"] for v in service.get("volumes", []) if isinstance(v, dict)}
        env = service.get("environment") or {}
        signs = "./.mesh/token-signing.key" in sources or "SIDECAR_TOKEN_SIGNING_KEY" in env
        assert signs == (name == "gateway"), name
        if name in ("workflow", "ingest"):
            assert "./.mesh/token-signing.pub" in sources
            assert env["SIDECAR_TOKEN_PUBLIC_KEYS"] == "/etc/sidecar/token/token-signing.pub"


@pytest.mark.parametrize(("name", "setting"), [("ingest", "SIDECAR_DICOM_TLS"),
                                                ("hl7", "SIDECAR_HL7_TLS")])
def test_the_tls_edges_have_their_certificate_in_compose_and_kubernetes(name: str,
                                                                         setting: str) -> None:
    """The ports a PACS and a RIS reach are TLS ones, so they listen: the edge certificate (the
    hospital's PKI, Secret sidecar-edge-tls) is mounted and named, not left to the operator."""
    pod = of_kind("Deployment")[name]["spec"]["template"]["spec"]
    c = _container(of_kind("Deployment")[name])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    [volume] = [v["name"] for v in pod["volumes"]
                if v.get("secret", {}).get("secretName") == "sidecar-edge-tls"]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == volume]
    assert mount["readOnly"] is True
    assert env[f"{setting}_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env[f"{setting}_KEY"] == f"{mount['mountPath']}/tls.key"
    example = [d for d in yaml.safe_load_all((REPO / "deploy/k8s/secret.example.yaml").read_text())
               if d and d["metadata"]["name"] == "sidecar-edge-tls"]
    assert example and example[0]["type"] == "kubernetes.io/tls"
    service = yaml.safe_load(COMPOSE.read_text())["services"][name]
    mounts = {v["target"]: v["source"] for v in service["volumes"]}
    assert mounts[service["environment"][f"{setting}_CERT"]] == "./.mesh/edge/edge.crt"
    assert mounts[service["environment"][f"{setting}_KEY"]] == "./.mesh/edge/edge.key"
