"""Which methods are done for a user, and what the operator certificate acts as."""

from __future__ import annotations

from sidecar_core.security.identity import Identity
from sidecar_core.security.user_auth import for_a_user, operator_user


def test_methods_done_for_a_user() -> None:
    for method in ("/sidecar.workflow.v1.ReviewService/ListWorklist",
                   "/sidecar.workflow.v1.ReviewService/RevokeSession",
                   "/sidecar.workflow.v1.ReportService/GenerateDraft",
                   "/sidecar.workflow.v1.WorkflowService/GetAsset",
                   "/sidecar.workflow.v1.OperationsService/Anything",
                   "/sidecar.ingest.v1.IngestService/SearchStudies",
                   "/sidecar.ingest.v1.RetrieveService/RenderFrame",
                   "/sidecar.ingest.v1.ViewportService/RenderViewport",
                   "/unknown.Service/New"):
        assert for_a_user(method), method
    for method in ("/sidecar.workflow.v1.ReviewService/Login",
                   "/sidecar.workflow.v1.ReviewService/CheckSession",
                   "/grpc.health.v1.Health/Check",
                   "/sidecar.ingest.v1.IngestService/UploadInstances",
                   "/sidecar.workflow.v1.ReportService/SubmitHl7Message"):
        assert not for_a_user(method), method


def test_the_operator_is_an_explicit_all_facilities_admin() -> None:
    user = operator_user(Identity("operator", "admin"))
    assert user.role == "admin" and user.all_facilities and user.scope() is None
