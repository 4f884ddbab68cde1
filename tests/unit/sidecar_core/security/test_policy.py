"""The method table: default deny, per-method exceptions, one table for every server."""

from __future__ import annotations

from protos.sidecar.ingest.v1 import ingest_service_pb2, retrieve_service_pb2, viewport_service_pb2
from protos.sidecar.normalizer.v1 import normalizer_service_pb2
from protos.sidecar.workflow.v1 import (
    operations_service_pb2,
    report_service_pb2,
    review_service_pb2,
    workflow_service_pb2,
)
from sidecar_core.security import policy


def test_default_deny_and_exceptions() -> None:
    assert policy.allowed("/sidecar.workflow.v1.ReviewService/ListWorklist", "service:gateway")
    assert policy.allowed("/sidecar.workflow.v1.ReviewService/ListWorklist", "operator")
    assert not policy.allowed("/sidecar.workflow.v1.ReviewService/DecideFinding", "operator")
    assert not policy.allowed("/sidecar.workflow.v1.ReviewService/Login", "service:ingest")
    assert policy.allowed("/sidecar.ingest.v1.IngestService/IngestInstances", "adapter")
    assert not policy.allowed("/sidecar.ingest.v1.IngestService/SearchStudies", "adapter")
    assert not policy.allowed("/sidecar.ingest.v1.NoSuchService/Anything", "operator")
    assert not policy.allowed("/sidecar.ingest.v1.IngestService/NewMethod", "service:gateway")
    assert policy.allowed("/grpc.health.v1.Health/Check", "adapter")
    # the workflow stores a prior read by WADO-RS (docs/priors.md), and searches nothing
    assert policy.allowed("/sidecar.ingest.v1.IngestService/IngestInstances", "service:workflow")
    assert policy.allowed("/sidecar.ingest.v1.IngestService/CompleteStudy", "service:workflow")
    assert not policy.allowed("/sidecar.ingest.v1.IngestService/UploadInstances",
                              "service:workflow")
    assert not policy.allowed("/sidecar.ingest.v1.IngestService/SearchStudies",
                              "service:workflow")


def test_every_method_of_every_served_contract_has_an_entry() -> None:
    """A method nobody may call is a bug: each one of our services is in the table, and every
    method of it resolves to at least one principal."""
    files = (ingest_service_pb2, retrieve_service_pb2, viewport_service_pb2, normalizer_service_pb2,
             operations_service_pb2, report_service_pb2, review_service_pb2,
             workflow_service_pb2)
    for module in files:
        for svc in module.DESCRIPTOR.services_by_name.values():
            assert svc.full_name in policy.POLICY, svc.full_name
            for method in svc.methods:
                callers = policy.callers_of(f"/{svc.full_name}/{method.name}")
                assert callers, f"nobody may call {svc.full_name}/{method.name}"
