"""`sidecar up`: starts the embedded servers and every service, waits for health, stops cleanly."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar_app.runtime.embedded import (
    REPO_ROOT,
    EmbeddedPostgres,
    die_with_parent,
    start_nats,
    start_triton,
    stop_process,
    with_volume_malloc,
)
from sidecar_core.security.edge_tls import (
    EdgeConfigError,
    pinned_client_context,
    plain_http_refusal,
    server_context,
)
from sidecar_core.security.mesh_tls import TLS_DIR, MeshCredentials, from_folder
from sidecar_core.security.pki import ensure_mesh
from sidecar_core.security.session_tokens import ensure_signing_key

log = logging.getLogger("sidecar.up")

DEFAULT_PORTS = {
    "gateway": 8080,
    "ingest": 50051,
    "workflow": 50052,
    "normalizer": 50053,
    "dicom": 11112,
    "dicom-tls": 2762,  # DICOM TLS (PS3.15 Annex B); listens only with a certificate
    "nats": 14222,
    "triton": 18001,
    "triton-http": 18000,
    "triton-metrics": 18002,
    "hl7": 2575,
    "hl7-tls": 2576,  # MLLP over TLS, with a certificate (no IANA port: 2576 by custom)
    # Prometheus metrics of each service process (the gateway's are at /metrics on its port).
    "workflow-metrics": 9102,
    "ingest-metrics": 9101,
    "preprocess-metrics": 9104,
    "normalizer-metrics": 9103,
    "hl7-metrics": 9105,
    "viewer": 8081,
}
# name → (module, gRPC port key or None)
SERVICES: list[tuple[str, str, str | None]] = [
    ("workflow", "workflow_svc.main", "workflow"),
    ("ingest", "ingest_svc.main", "ingest"),
    ("preprocess", "imaging_svc.main", None),
    ("normalizer", "normalizer_svc.main", "normalizer"),
    ("gateway", "review_gateway.main", None),
    ("hl7", "workflow_svc.report_loop.hl7.main", None),
    ("viewer", "sidecar_app.runtime.viewer", None),  # OHIF, at the root of its own origin
]
# Stateless workers: `--replicas N` runs N processes of each; they share the jobs through the
# durable consumers. A replica serves its gRPC API (if any) on a port of its own choosing.
VOLUME_SERVICES = ("preprocess", "normalizer")  # they read, decode and send whole volumes
REPLICATED = {"workflow": "SIDECAR_WORKFLOW_PORT", "preprocess": "",
              "normalizer": "SIDECAR_NORMALIZER_PORT"}


@dataclass
class UpOptions:
    data_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    model_repo: Path = REPO_ROOT / "deploy" / "triton" / "models"
    quiet: bool = False
    replicas: int = 1
    # HTTPS of the gateway and the viewer (SIDECAR_HTTPS_CERT/KEY of both), and plain HTTP
    # allowed on a non-loopback address (SIDECAR_INSECURE_HTTP).
    https_cert: Path | None = None
    https_key: Path | None = None
    insecure_http: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.https_cert is not None else "http"

    def edge_env(self) -> dict[str, str]:
        """The edge settings of the gateway and viewer processes (absolute paths: they run
        in the repository root)."""
        env = {"SIDECAR_INSECURE_HTTP": "1" if self.insecure_http else "0"}
        if self.https_cert is not None and self.https_key is not None:
            env["SIDECAR_HTTPS_CERT"] = str(self.https_cert.resolve())
            env["SIDECAR_HTTPS_KEY"] = str(self.https_key.resolve())
        return env

    def edge_problem(self) -> str | None:
        """Why the gateway or viewer could not start with these options (one line), or None."""
        if (self.https_cert is None) != (self.https_key is None):
            return "--tls-cert and --tls-key go together: give both or neither"
        if self.https_cert is not None and self.https_key is not None:
            try:
                server_context(self.https_cert, self.https_key)
            except EdgeConfigError as exc:
                return str(exc)
        for what, host_env, port in (("review gateway", "SIDECAR_GATEWAY_HOST", "gateway"),
                                     ("OHIF viewer", "SIDECAR_VIEWER_HOST", "viewer")):
            host = os.environ.get(host_env) or "127.0.0.1"
            refusal = plain_http_refusal(host, self.ports[port], self.https_cert is not None,
                                         self.insecure_http, what)
            if refusal:
                return refusal
        return None


def outbound_problem() -> str | None:
    """A bad SIDECAR_EGRESS_ALLOW item or secret key, in one line, before anything starts."""
    from sidecar_core.egress import EgressPolicy
    from sidecar_core.secret_box import SecretKeyError, decode_key

    try:
        EgressPolicy.parse(os.environ.get("SIDECAR_EGRESS_ALLOW", ""))
    except ValueError as exc:
        return f"SIDECAR_EGRESS_ALLOW: {exc}"
    if os.environ.get("SIDECAR_AUDIT_SYSLOG"):  # the ATNA repository (docs/audit.md)
        from sidecar_core.atna import Target

        try:
            Target.parse(os.environ["SIDECAR_AUDIT_SYSLOG"])
        except ValueError as exc:
            return str(exc)
    try:
        if os.environ.get("SIDECAR_SECRET_KEY"):
            decode_key(os.environ["SIDECAR_SECRET_KEY"], "SIDECAR_SECRET_KEY")
        for key in os.environ.get("SIDECAR_SECRET_PREVIOUS_KEYS", "").split(","):
            if key.strip():
                decode_key(key, "SIDECAR_SECRET_PREVIOUS_KEYS")
    except SecretKeyError as exc:
        return str(exc)
    return None


class Mesh:
    """Owns every child process of `sidecar up`."""

    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.data_dir = opts.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.pg: EmbeddedPostgres | None = None
        self.infra: list[subprocess.Popen] = []
        self.children: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}
        self.operator: MeshCredentials | None = None
        self.stopping = threading.Event()

    def start_infra(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        p = self.opts.ports
        # The mesh CA and every service's certificate, made on first start, renewed when near
        # expiry (services read them from DATA_DIR/tls; docs/deployment.md has the rest).
        renewed = ensure_mesh(self.data_dir / TLS_DIR)
        if renewed:
            log.info("mesh certificates written: %s", ", ".join(renewed))
        self.operator = from_folder(self.data_dir / TLS_DIR, "operator")
        # The gateway's session-token key pair, made before any service starts: the workflow
        # and ingest services read DATA_DIR/token-signing.pub at start, whatever order they
        # start in (not with an explicit HS256 secret or an external signing key).
        if not (os.environ.get("SIDECAR_TOKEN_SECRET")
                or os.environ.get("SIDECAR_TOKEN_SIGNING_KEY")):
            log.info("session token key %s", ensure_signing_key(self.data_dir))
        # The key that seals secret settings in the database (DATA_DIR/keys/secrets.key, 0600),
        # unless SIDECAR_SECRET_KEY gives one (docs/deployment.md, "Outbound destinations").
        if not os.environ.get("SIDECAR_SECRET_KEY"):
            from sidecar_core.secret_box import load_or_create_key

            load_or_create_key(self.data_dir)
        # Services connect as a role that may only insert and read audit rows; the migrations
        # run as the owner (docs/audit.md).
        db_url = os.environ.get("SIDECAR_DATABASE_URL", "")
        owner_url = os.environ.get("SIDECAR_MIGRATION_DATABASE_URL", "") or db_url
        if not db_url:
            self.pg = EmbeddedPostgres(self.data_dir / "pg")
            owner_url, db_url = self.pg.url, self.pg.app_url()
        from sidecar_core.db import sqlalchemy_url
        from sidecar_core.store.migrate import upgrade

        upgrade(sqlalchemy_url(owner_url))
        nats_url = os.environ.get("SIDECAR_NATS_URL", "")
        if not nats_url:
            self.infra.append(start_nats(self.data_dir / "nats", p["nats"], self.logs / "nats.log",
                                         self.data_dir))
            nats_url = f"nats://127.0.0.1:{p['nats']}"
        triton_url = os.environ.get("SIDECAR_TRITON_URL", "")
        if not triton_url:
            self.infra.append(
                start_triton(
                    self.opts.model_repo,
                    p["triton"],
                    p["triton-http"],
                    p["triton-metrics"],
                    self.logs / "triton.log",
                )
            )
            triton_url = f"127.0.0.1:{p['triton']}"
        scheme = self.opts.scheme
        self.env = {
            **os.environ,
            **self.opts.edge_env(),
            "SIDECAR_DATA_DIR": str(self.data_dir),
            "SIDECAR_DATABASE_URL": db_url,
            "SIDECAR_NATS_URL": nats_url,
            "SIDECAR_TRITON_URL": triton_url,
            "SIDECAR_INGEST_PORT": str(p["ingest"]),
            "SIDECAR_DICOM_PORT": str(p["dicom"]),
            "SIDECAR_DICOM_TLS_PORT": str(p["dicom-tls"]),
            "SIDECAR_WORKFLOW_PORT": str(p["workflow"]),
            "SIDECAR_NORMALIZER_PORT": str(p["normalizer"]),
            "SIDECAR_GATEWAY_PORT": str(p["gateway"]),
            "SIDECAR_HL7_PORT": str(p["hl7"]),
            "SIDECAR_HL7_TLS_PORT": str(p["hl7-tls"]),
            "SIDECAR_VIEWER_PORT": str(p["viewer"]),
            # The DICOMweb root OHIF reads: the gateway, over HTTPS when it has a certificate.
            "SIDECAR_VIEWER_DICOMWEB_URL": os.environ.get("SIDECAR_VIEWER_DICOMWEB_URL")
            or f"{scheme}://127.0.0.1:{p['gateway']}/dicomweb",
            # The gateway answers the viewer's cross-origin DICOMweb requests (CORS).
            "SIDECAR_CORS_ORIGINS": ",".join(
                o for o in [os.environ.get("SIDECAR_CORS_ORIGINS", ""),
                            *viewer_origins(p["viewer"], scheme)] if o),
            "SIDECAR_INGEST_ADDRESS": f"127.0.0.1:{p['ingest']}",
            "SIDECAR_WORKFLOW_ADDRESS": f"127.0.0.1:{p['workflow']}",
            "SIDECAR_NORMALIZER_ADDRESS": f"127.0.0.1:{p['normalizer']}",
            "PYTHONUNBUFFERED": "1",
            # Where the gateway's dashboard reads each service's metrics.
            "SIDECAR_METRICS_TARGETS": json.dumps({
                name: f"127.0.0.1:{p[name + '-metrics']}"
                for name in ("workflow", "ingest", "preprocess", "normalizer")
                if name + "-metrics" in p}),
        }

    def replicas(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, module, extra environment) of every replica beyond the first."""
        modules = {name: module for name, module, _ in SERVICES}
        return [(f"{name}-{i}", modules[name],
                 {"SIDECAR_INSTANCE": str(i), **({port_env: "0"} if port_env else {})})
                for name, port_env in REPLICATED.items()
                for i in range(2, self.opts.replicas + 1)]

    def spawn(self, name: str, module: str, extra_env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        out = (self.logs / f"{name}.log").open("ab")
        env = dict(self.env)
        if name.split("-")[0] in VOLUME_SERVICES:
            env = with_volume_malloc(env)
        if f"{name}-metrics" in self.opts.ports:
            env["SIDECAR_METRICS_PORT"] = str(self.opts.ports[f"{name}-metrics"])
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            preexec_fn=die_with_parent,
        )
        self.children[name] = proc
        return proc

    def start_services(self) -> None:
        for name, module, _ in SERVICES:
            self.spawn(name, module)
        for name, module, env in self.replicas():
            self.spawn(name, module, env)

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        pending = {name for name, _, _ in SERVICES}
        while pending and time.monotonic() < deadline:
            for name, _module, port_key in SERVICES:
                proc = self.children[name]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {proc.returncode}; "
                        f"see {self.logs / (name + '.log')}"
                    )
                if name in pending and self._healthy(name, port_key):
                    pending.discard(name)
            time.sleep(0.3)
        if pending:
            raise TimeoutError(f"not healthy after {timeout}s: {', '.join(sorted(pending))}")
        for name, _module, _env in self.replicas():
            if self.children[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.logs / (name + '.log')}")

    def _healthy(self, name: str, port_key: str | None) -> bool:
        if name == "gateway":
            url = f"{self.opts.scheme}://127.0.0.1:{self.opts.ports['gateway']}/healthz"
            # Over HTTPS: the chain checked against the very certificate given (the name on it
            # need not be 127.0.0.1).
            context = (pinned_client_context(self.opts.https_cert)
                       if self.opts.https_cert is not None else None)
            try:
                with urllib.request.urlopen(url, timeout=2,  # noqa: S310 (loopback)
                                            context=context) as r:
                    return bool(r.status == 200)
            except Exception:
                return False
        if port_key is None:
            ready = self.data_dir / "run" / f"{name}.ready"
            return ready.exists() and ready.read_text().strip() == str(self.children[name].pid)
        assert self.operator is not None
        channel = self.operator.channel(f"127.0.0.1:{self.opts.ports[port_key]}")
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    def watch(self) -> None:
        """Restarts a service that died unexpectedly (with a pause), until stopping."""
        units = [(name, module, None) for name, module, _ in SERVICES] + self.replicas()
        while not self.stopping.wait(1.0):
            for name, module, env in units:
                proc = self.children.get(name)
                if proc is not None and proc.poll() is not None and not self.stopping.is_set():
                    log.warning("%s exited with %s; restarting", name, proc.returncode)
                    time.sleep(1.0)
                    if not self.stopping.is_set():
                        self.spawn(name, module, env)

    def stop(self) -> None:
        self.stopping.set()
        for name, _, _ in reversed(SERVICES):
            proc = self.children.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.children):
            stop_process(self.children[name], timeout=20)
        for proc in reversed(self.infra):
            stop_process(proc)
        if self.pg is not None:
            self.pg.stop()

    def write_runtime_file(self) -> None:
        info = {
            "ports": self.opts.ports,
            "pid": os.getpid(),
            "database_url": self.env["SIDECAR_DATABASE_URL"],
            "nats_url": self.env["SIDECAR_NATS_URL"],
            "triton_url": self.env["SIDECAR_TRITON_URL"],
        }
        (self.data_dir / "runtime.json").write_text(json.dumps(info, indent=2))


def hl7_line(opts: UpOptions) -> str:
    """What `sidecar up` says about the HL7 listener: its MLLP port, and MLLP/TLS with a
    certificate (the HTTPS one, or SIDECAR_HL7_TLS_CERT)."""
    host = os.environ.get("SIDECAR_HL7_HOST") or "127.0.0.1"
    line = f"HL7 MLLP: {host}:{opts.ports['hl7']}"
    if opts.https_cert is not None or os.environ.get("SIDECAR_HL7_TLS_CERT"):
        line += f", MLLP over TLS: {host}:{opts.ports['hl7-tls']}"
    return line


def viewer_origins(port: int, scheme: str = "http") -> list[str]:
    return [f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}"]


def viewer_line(ports: dict[str, int], scheme: str = "http") -> str:
    """What `sidecar up` says about the OHIF viewer: its URL, or how to add it."""
    from sidecar_app.runtime.ohif_fetch import installed_version
    from sidecar_app.runtime.viewer import ViewerSettings, missing_message

    if not installed_version(ViewerSettings().viewer_dir):
        return missing_message()
    return (f"OHIF viewer: {scheme}://127.0.0.1:{ports['viewer']}/ (DICOMweb "
            f"{scheme}://127.0.0.1:{ports['gateway']}/dicomweb; open a study at "
            f"/viewer?StudyInstanceUIDs=UID&token=BEARER_TOKEN)")


def busy_ports(ports: dict[str, int]) -> list[str]:
    """'NAME port N' for each port `sidecar up` would bind that something already listens on
    (NATS and Triton only when embedded)."""
    external = {"nats": "SIDECAR_NATS_URL", "triton": "SIDECAR_TRITON_URL",
                "triton-http": "SIDECAR_TRITON_URL", "triton-metrics": "SIDECAR_TRITON_URL"}
    busy = []
    for name, port in ports.items():
        if name in external and os.environ.get(external[name]):
            continue
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{name} port {port} (--{name}-port)")
    return busy


def run_up(opts: UpOptions, after_ready: list | None = None) -> int:
    """Runs the mesh in the foreground until SIGINT/SIGTERM; returns the exit code."""
    mesh = Mesh(opts)
    stop = threading.Event()

    def _signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    problem = opts.edge_problem()
    if problem:
        print(f"sidecar up: error: {problem}", file=sys.stderr, flush=True)
        return 2
    problem = outbound_problem()
    if problem:
        print(f"sidecar up: error: {problem}", file=sys.stderr, flush=True)
        return 2
    busy = busy_ports(opts.ports)
    if busy:
        print(f"sidecar up: error: already in use: {', '.join(busy)}; is another 'sidecar up' "
              "running? Stop it or pass other ports", file=sys.stderr, flush=True)
        return 2
    try:
        mesh.start_infra()
        (mesh.data_dir / "run").mkdir(exist_ok=True)
        for ready in (mesh.data_dir / "run").glob("*.ready"):
            ready.unlink()
        mesh.start_services()
        mesh.wait_healthy()
        mesh.write_runtime_file()
        for hook in after_ready or []:
            hook(mesh)
        print(viewer_line(opts.ports, opts.scheme), flush=True)
        print(hl7_line(opts), flush=True)
        gateway = f"{opts.scheme}://127.0.0.1:{opts.ports['gateway']}"
        print(
            f"Sidecar is up. Review UI: {gateway}/ "
            f"(API: {gateway}/api/v1, logs: {mesh.logs})",
            flush=True,
        )
        watcher = threading.Thread(target=mesh.watch, daemon=True)
        watcher.start()
        stop.wait()
        return 0
    except Exception as exc:
        print(f"sidecar up: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 1
    finally:
        mesh.stop()
