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

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose.yaml"
KUBERNETES_VERSION = "1.30.0"
BIN = Path(sys.executable).parent


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
                                "triton"}
    for name, d in deployments.items():
        [c] = d["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{name} has no {probe}"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        if name == "triton":
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
            continue
        assert {"configMapRef": {"name": "sidecar-config"}} in c["envFrom"]
        assert {"secretRef": {"name": "sidecar-secrets"}} in c["envFrom"]
        module = c["command"][-1]
        assert importlib.util.find_spec(module) is not None, module
    grpc = {n for n, d in deployments.items()
            if "grpc" in d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]}
    assert grpc == {"ingest", "workflow", "normalizer"}
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
