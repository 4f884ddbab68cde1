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


class _Context:
    def __init__(self, token: str) -> None:
        self.token = token

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def test_viewer_codes_and_viewer_tokens_call_only_what_they_are_for() -> None:
    """A hand-over code redeems itself only; the viewer's token reads DICOMweb only; both die
    with their session (its `sid`)."""
    import asyncio

    import pytest
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sidecar_core.errors import PermissionDenied, Unauthenticated
    from sidecar_core.security import session_tokens as st
    from sidecar_core.security.user_auth import UserAuthInterceptor

    key = st.KeySet(Ed25519PrivateKey.generate())
    revoked: set[str] = set()

    async def is_revoked(jti: str) -> bool:
        return jti in revoked

    auth = UserAuthInterceptor(key, is_revoked)

    def token(use: str, sid: str = "s1") -> str:
        return st.issue(key, user_id="u", username="ann", role="radiologist",
                        facilities=["north"], ttl_s=60,
                        claims={"use": use, "study": "1.2.3", "sid": sid})

    def user_of(method: str, tok: str) -> st.Principal | None:
        return asyncio.run(auth.user_of(method, _Context(tok)))  # type: ignore[arg-type]

    redeem = "/sidecar.workflow.v1.ReviewService/RedeemViewerCode"
    search = "/sidecar.ingest.v1.IngestService/SearchStudies"
    frame = "/sidecar.ingest.v1.RetrieveService/RenderFrame"
    worklist = "/sidecar.workflow.v1.ReviewService/ListWorklist"
    claim = "/sidecar.workflow.v1.ReviewService/ClaimStudy"
    code, viewer = token(st.USE_VIEWER_CODE), token(st.USE_VIEWER)
    me = user_of(redeem, code)
    assert me is not None and me.use == st.USE_VIEWER_CODE and me.study == "1.2.3"
    for method in (search, worklist, claim):
        with pytest.raises(PermissionDenied, match="viewer_code token may not call"):
            user_of(method, code)
    assert user_of(search, viewer) is not None and user_of(frame, viewer) is not None
    for method in (redeem, worklist, claim):
        with pytest.raises(PermissionDenied, match="viewer token may not call"):
            user_of(method, viewer)
    revoked.add("s1")  # the session was logged out
    with pytest.raises(Unauthenticated, match="logged out"):
        user_of(search, viewer)
    with pytest.raises(Unauthenticated, match="logged out"):
        user_of(redeem, code)
