"""A gRPC health probe over the mesh's mutual TLS, for Kubernetes exec probes and compose
healthchecks (their built-in `grpc:` probes speak plaintext, which the servers refuse):

    python -m sidecar_core.serving.health_probe 50052 [--service NAME] [--timeout 3]

It presents this process's own mesh certificate (SIDECAR_TLS_CA, SIDECAR_TLS_CERT,
SIDECAR_TLS_KEY, or DATA_DIR/tls/<NAME>.crt for `--service NAME`) and calls
grpc.health.v1.Health/Check on 127.0.0.1:PORT. Exit 0 when the server answers SERVING;
otherwise one line on stderr and 1 (an answer other than SERVING, or no answer in time) or
2 (no usable credentials).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar_core.security.mesh_tls import MeshCredentials, MissingCredentials
from sidecar_core.settings import CommonSettings

NOT_HEALTHY = 1
NO_CREDENTIALS = 2


def check(port: int, credentials: MeshCredentials, *, host: str = "127.0.0.1",
          timeout_s: float = 3.0, service: str = "",
          server_name: str | None = None) -> tuple[bool, str]:
    """(serving, one line saying what the server answered) for the health of `service`
    ("" = the server as a whole) at host:port."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    with credentials.channel(target, options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call):
                return False, f"{target}: {exc.code().name}: {exc.details()}"
            return False, f"{target}: {exc}"  # pragma: no cover (every RpcError here is a Call)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def _credentials(service: str | None) -> MeshCredentials:
    settings = CommonSettings()
    if not (settings.tls_cert or settings.tls_key or service):
        raise MissingCredentials("set SIDECAR_TLS_CA, SIDECAR_TLS_CERT and SIDECAR_TLS_KEY, or "
                                 "pass --service NAME to use DATA_DIR/tls/NAME.crt")
    return settings.mesh_credentials(service or "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sidecar_core.serving.health_probe",
        description="gRPC health check over the mesh's mTLS; exit 0 when SERVING")
    parser.add_argument("port", type=int, help="the gRPC port of this pod/container")
    parser.add_argument("--service", help="whose certificate to present from DATA_DIR/tls when "
                        "SIDECAR_TLS_CERT/KEY are not set (workflow, ingest, …)")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--check", default="", metavar="GRPC_SERVICE",
                        help="the health of one gRPC service; default: the whole server")
    parser.add_argument("--server-name", help="the name to verify the server certificate "
                        "against when it has no IP address SAN for --host (e.g. localhost)")
    args = parser.parse_args(argv)
    try:
        credentials = _credentials(args.service)
    except MissingCredentials as exc:
        print(f"health probe: {exc}", file=sys.stderr)
        return NO_CREDENTIALS
    serving, line = check(args.port, credentials, host=args.host, timeout_s=args.timeout,
                          service=args.check, server_name=args.server_name)
    print(f"health probe: {line}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else NOT_HEALTHY


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
