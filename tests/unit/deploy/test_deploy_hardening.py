"""deploy/ as a hospital applies it: the restricted Pod Security Standard on every pod, budgets
for disruptions, what the network policies and edge services let in from outside, the Ingress,
OHIF and the metrics a scraper reaches, in Kubernetes and in compose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose.yaml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
# The restricted profile's volume types (Kubernetes docs, Pod Security Standards)
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
GRPC_METRICS = {"workflow", "ingest", "preprocess", "normalizer", "hl7"}


def manifests() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def restricted_violations(pod: dict) -> list[str]:
    """What in a pod spec the restricted Pod Security Standard (v1.30) refuses."""
    bad = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(f"{key} is set")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad.append(f"pod seccompProfile {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for c in [*(pod.get("initContainers") or []), *pod["containers"]]:
        csc = c.get("securityContext") or {}
        name = c["name"]
        if csc.get("privileged"):
            bad.append(f"{name}: privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities.add {caps['add']}")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot is not true")
        if csc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: no RuntimeDefault/Localhost seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"{name}: hostPort")
    return bad


def test_the_restricted_checker_finds_what_the_profile_refuses() -> None:
    loose = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
             "containers": [{"name": "c", "securityContext": {
                 "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                             "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    found = " ".join(restricted_violations(loose))
    for rule in ("hostNetwork", "volume h", "privileged", "allowPrivilegeEscalation",
                 "drop lacks ALL", "SYS_ADMIN", "runAsNonRoot", "seccompProfile", "hostPort"):
        assert rule in found, rule
    tight = {"securityContext": {"runAsNonRoot": True,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
             "containers": [{"name": "c", "securityContext": {
                 "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}
    assert restricted_violations(tight) == []


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    workloads = [d for d in manifests() if d["kind"] in WORKLOADS]
    assert len(workloads) >= 9
    bad = {f"{d['kind']}/{d['metadata']['name']}": v for d in workloads
           if (v := restricted_violations(pod_spec(d)))}
    assert not bad, bad


def test_every_replicated_workload_has_a_disruption_budget() -> None:
    budgets = of_kind("PodDisruptionBudget")
    for kind in ("Deployment", "StatefulSet"):
        for name, d in of_kind(kind).items():
            if d["spec"].get("replicas", 1) < 2:
                continue
            labels = d["spec"]["template"]["metadata"]["labels"]
            [pdb] = [b for b in budgets.values()
                     if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
            assert pdb["spec"]["minAvailable"] < d["spec"]["replicas"], name  # drains can go on


def _open_ports(policy: dict) -> list[tuple[str, int]]:
    """(source, port) each rule admits; source 'any' when the rule has no `from`."""
    opened = []
    for rule in policy["spec"].get("ingress") or []:
        sources = ["any"] if not rule.get("from") else [yaml.safe_dump(f, sort_keys=True)
                                                        for f in rule["from"]]
        for port in rule.get("ports") or [{"port": "all"}]:
            opened += [(s, port["port"]) for s in sources]
    return opened


def _policies_for(app: str) -> list[dict]:
    return [p for p in of_kind("NetworkPolicy").values()
            if not p["spec"]["podSelector"]  # the default deny
            or p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == app
            or any(app in e.get("values", [])
                   for e in p["spec"]["podSelector"].get("matchExpressions", []))]


def test_from_outside_only_the_ingress_dicom_tls_and_mllp_tls_get_in() -> None:
    policies = of_kind("NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {},
                                                        "policyTypes": ["Ingress"]}
    anywhere = {(p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], port)
                for p in policies.values() if p["spec"]["podSelector"]
                for source, port in _open_ports(p) if source == "any"}
    assert anywhere == {("ingest", 2762), ("hl7", 2576)}
    namespaces = {}
    for p in policies.values():
        for rule in p["spec"].get("ingress") or []:
            for f in rule.get("from") or []:
                if "namespaceSelector" in f:
                    ns = f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    sel = p["spec"]["podSelector"]
                    apps = sel.get("matchLabels", {}).get("app.kubernetes.io/name") or tuple(
                        sel["matchExpressions"][0]["values"])
                    namespaces.setdefault(ns, set()).add(
                        (apps, tuple(x["port"] for x in rule["ports"])))
    assert namespaces["ingress-nginx"] == {("gateway", (8080,)), ("ohif", (8081,))}
    assert set(namespaces) == {"ingress-nginx", "monitoring"}
    # Triton: the normalizer only
    [triton] = [p for p in _policies_for("triton") if p["spec"]["podSelector"]]
    assert triton["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "normalizer"}}}], "ports": [{"protocol": "TCP", "port": 8001}]}]


def test_the_edge_services_are_the_tls_ports_and_the_ingress_has_tls() -> None:
    outside = {(s["spec"]["selector"]["app.kubernetes.io/name"], p["port"], s["spec"]["type"])
               for s in of_kind("Service").values() if s["spec"].get("type") in
               ("LoadBalancer", "NodePort") for p in s["spec"]["ports"]}
    assert outside == {("ingest", 2762, "LoadBalancer"), ("hl7", 2576, "LoadBalancer")}
    [ingress] = of_kind("Ingress").values()
    hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    backends = {}
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in hosts
        for path in rule["http"]["paths"]:
            backends[rule["host"]] = path["backend"]["service"]["name"]
    assert sorted(backends.values()) == ["gateway", "ohif"]
    services = of_kind("Service")
    assert {"gateway", "ohif"} <= set(services)
    ohif = of_kind("Deployment")["ohif"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in ohif["env"]}
    viewer_host = next(h for h, s in backends.items() if s == "ohif")
    gateway_host = next(h for h, s in backends.items() if s == "gateway")
    assert env["SIDECAR_VIEWER_DICOMWEB_URL"] == f"https://{gateway_host}/dicomweb"
    gw = of_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "SIDECAR_CORS_ORIGINS", "value": f"https://{viewer_host}"} in gw["env"]


def test_metrics_listen_where_the_scrape_configuration_looks() -> None:
    config = of_kind("ConfigMap")["sidecar-config"]["data"]
    assert config["SIDECAR_METRICS_HOST"] == "0.0.0.0"
    port = int(config["SIDECAR_METRICS_PORT"])
    for name in GRPC_METRICS:
        [c] = of_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": port} in c["ports"], name
    scrape = yaml.safe_load(of_kind("ConfigMap")["sidecar-prometheus"]["data"]["prometheus.yml"])
    [job] = scrape["scrape_configs"]
    keep = next(r["regex"] for r in job["relabel_configs"]
                if r["source_labels"][-1] == "__meta_kubernetes_pod_container_port_name")
    for name in GRPC_METRICS:
        assert re.fullmatch(keep, f"{name};metrics"), name
    assert re.fullmatch(keep, "gateway;http") and not re.fullmatch(keep, "triton;metrics")
    policy = of_kind("NetworkPolicy")["metrics-from-prometheus"]
    assert {port, 8080} == {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_serves_ohif_and_publishes_only_the_tls_edges() -> None:
    services = _compose()["services"]
    assert services["ohif"]["command"] == ["python", "-m", "sidecar_app.runtime.viewer"]
    published = {int(p.rsplit(":", 1)[1]) for s in services.values() for p in s.get("ports", [])}
    assert published == {50051, 2762, 2576, 8080, 8081, 9090}  # never plain DICOM or MLLP
    assert 11112 not in published and 2575 not in published


@pytest.mark.parametrize("name", ["workflow", "ingest", "preprocess", "normalizer", "gateway",
                                  "hl7", "migrate", "ohif"])
def test_compose_services_drop_every_capability_and_run_as_the_image_user(name: str) -> None:
    service = _compose()["services"][name]
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["user"] == "10001:10001"


def test_compose_metrics_are_scraped_by_the_shipped_configuration() -> None:
    compose = _compose()
    env = compose["x-sidecar"]["environment"]
    assert env["SIDECAR_METRICS_HOST"] == "0.0.0.0"
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    names = {n for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", [])
             for n in sd["names"]}
    ports = {sd["port"] for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", [])}
    assert names == GRPC_METRICS and ports == {int(env["SIDECAR_METRICS_PORT"])}
    targets = {t for job in scrape["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    assert targets == {"gateway:8080"}
    assert set(names) | {"gateway"} <= set(compose["services"])
