"""Passwords are checked in one place, behind the login rate limit: `users.authenticate` is
called only by `sessions.login`, and no RPC but ReviewService.Login takes a password."""

from __future__ import annotations

import ast
from pathlib import Path

from google.protobuf import descriptor_pool

from protos.sidecar.workflow.v1 import (  # noqa: F401 (registers the files in the pool)
    operations_service_pb2,
    report_service_pb2,
    review_service_pb2,
    workflow_service_pb2,
)

ROOT = Path(__file__).resolve().parents[4]
PRODUCT = ("workflow_svc", "review_gateway", "sidecar_app", "ingest_svc", "normalizer_svc",
           "sidecar_core")


def _calls_of(name: str) -> list[str]:
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.attr if isinstance(func, ast.Attribute) else getattr(
                        func, "id", "")
                    if called == name:
                        found.append(str(path.relative_to(ROOT)))
    return found


def test_only_the_rate_limited_login_checks_a_password() -> None:
    assert _calls_of("authenticate") == ["workflow_svc/identity/sessions.py"]


def test_no_workflow_rpc_but_login_takes_a_password() -> None:
    pool = descriptor_pool.Default()
    takes_password = []
    for file in ("operations_service", "report_service", "review_service", "workflow_service"):
        proto = pool.FindFileByName(f"sidecar/workflow/v1/{file}.proto")
        for service in proto.services_by_name.values():
            for method in service.methods:
                if "password" in method.input_type.fields_by_name:
                    takes_password.append(f"{service.name}.{method.name}")
    assert takes_password == ["ReviewService.Login"]
