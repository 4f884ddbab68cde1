"""sidecar_app.errors: every failure of a `sidecar` command as one line and an exit status."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar_app.errors import (
    OneLineParser,
    UserError,
    ensure_reachable,
    guarded,
    host_port,
    one_line,
    rpc_error,
)
from sidecar_core.errors import NotFound
from tests.servers import free_port


def test_host_port_forms() -> None:
    assert host_port("10.0.0.1:104", 11112) == ("10.0.0.1", 104)
    assert host_port(":50051", 1) == ("127.0.0.1", 50051)
    assert host_port("pacs", 11112) == ("pacs", 11112)
    assert host_port("[::1]:8080", 1) == ("::1", 8080)
    for bad in ("pacs:port", "pacs:0", "pacs:70000"):
        with pytest.raises(UserError, match="is not HOST:PORT"):
            host_port(bad, 1)


def test_one_line_for_each_kind_of_failure() -> None:
    assert one_line(UserError("plain", exit_code=3)) == ("plain", 3)
    assert one_line(NotFound("FACILITY_NOT_FOUND", "no facility\n'x'")) == \
        ("FACILITY_NOT_FOUND: no facility 'x'", 2)
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x")) == \
        ("no such file or directory: /x", 2)
    assert one_line(FileNotFoundError("pack segment 1 is missing")) == \
        ("pack segment 1 is missing", 2)
    message, code = one_line(KeyError("a\nb"))
    assert code == 1 and "\n" not in message and message.startswith("unexpected KeyError")


def test_unreachable_port_and_rpc_name_the_service_and_the_address() -> None:
    port = free_port()
    with pytest.raises(UserError) as refused:
        ensure_reachable("the ingest service", f"127.0.0.1:{port}", 50051)
    assert str(refused.value) == (f"cannot reach the ingest service at 127.0.0.1:{port} "
                                  "(connection refused); is 'sidecar up' running?")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
            pytest.raises(grpc.RpcError) as failed:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert str(rpc_error("the ingest service", f"127.0.0.1:{port}", failed.value)) == (
        f"cannot reach the ingest service at 127.0.0.1:{port} (connection refused); "
        "is 'sidecar up' running?")


def test_parser_errors_and_guarded_failures_are_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineParser(prog="sidecar thing")
    parser.add_argument("--n", type=int, required=True)
    with pytest.raises(SystemExit) as usage:
        parser.parse_args(["--n", "x"])
    assert usage.value.code == 2
    assert capsys.readouterr().err == ("sidecar thing: error: argument --n: invalid int value: "
                                       "'x' (see 'sidecar thing --help')\n")

    def boom() -> int:
        raise RuntimeError("disk\non fire")

    assert guarded("sidecar thing", boom) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sidecar thing: error: unexpected "
                                                   "RuntimeError: disk on fire")
