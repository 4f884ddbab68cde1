"""Item 3 of the zero-trust mesh: the workflow and ingest services verify the user's session
token themselves (real gRPC servers on mTLS, real PostgreSQL). Called with the GATEWAY's
certificate, a call without a token, with a forged, expired or revoked token is refused, and
the facility scope is the token's alone: a radiologist of fac-a sees nothing of fac-b, a token
naming no facility sees nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from ingest_svc.rpc.query_servicer import QueryMethods
from protos.sidecar.ingest.v1 import ingest_service_pb2 as ipb
from protos.sidecar.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from protos.sidecar.workflow.v1 import review_service_pb2_grpc as rpb_grpc
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import session_tokens
from sidecar_core.security.enforcement import authorization
from sidecar_core.security.session_tokens import KeySet, TokenKeyError
from sidecar_core.security.user_auth import REJECTED_EVENT, user_authentication
from sidecar_core.serving.grpc_server import GrpcServer, error_info
from sidecar_core.settings import CommonSettings
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store import models as m
from tests import pki as test_pki
from tests.integration.test_workflow_queries import Seeded, seed
from workflow_svc.review import servicer as review_servicer
from workflow_svc.study import servicer as study_servicer

pytestmark = pytest.mark.integration

KEYS = KeySet(b"user-token-secret-" + b"k" * 40)
OTHER_KEY = b"another-secret-" + b"z" * 40


class _Query(QueryMethods, ipb_grpc.IngestServiceServicer):
    """IngestService's real Search* methods (they need only the receiver's database)."""

    def __init__(self, db: Database) -> None:
        self.receiver = SimpleNamespace(db=db)  # type: ignore[assignment]


@dataclass
class Services:
    seeded: Seeded
    review: rpb_grpc.ReviewServiceStub
    ingest: ipb_grpc.IngestServiceStub
    db: Database
    workflow_address: str


@pytest.fixture()
async def services(db: Database, tmp_path: Path) -> AsyncIterator[Services]:
    async with serving(db, tmp_path, KEYS) as s:
        yield s


@contextlib.asynccontextmanager
async def serving(db: Database, tmp_path: Path, keys: KeySet) -> AsyncIterator[Services]:
    """The workflow (review, study) and ingest (QIDO) services, verifying with `keys`."""
    seeded = await seed(db, ObjectStore(tmp_path / "objects", fsync=False))
    topo = Topology("usertok", "USERTOK")
    workflow = GrpcServer("127.0.0.1:0", test_pki.service("workflow"),
                          authorization=authorization(db, topo, "workflow_svc"),
                          interceptors=[user_authentication(db, topo, "workflow_svc", keys, 0)])
    study_servicer.register(workflow, db)
    review_servicer.register(workflow, db, topo)
    ingest = GrpcServer("127.0.0.1:0", test_pki.service("ingest"),
                        authorization=authorization(db, topo, "ingest_svc"),
                        interceptors=[user_authentication(db, topo, "ingest_svc", keys, 0)])
    ingest.register(ipb_grpc.add_IngestServiceServicer_to_server, _Query(db),
                    ["sidecar.ingest.v1.IngestService"])
    w_port, i_port = await workflow.start(), await ingest.start()
    w_channel = test_pki.aio_channel(f"127.0.0.1:{w_port}", "gateway")
    i_channel = test_pki.aio_channel(f"127.0.0.1:{i_port}", "gateway")
    try:
        yield Services(seeded, rpb_grpc.ReviewServiceStub(w_channel),
                       ipb_grpc.IngestServiceStub(i_channel), db, f"127.0.0.1:{w_port}")
    finally:
        await w_channel.close()
        await i_channel.close()
        await workflow.stop(0)
        await ingest.stop(0)


def token(role: str = "radiologist", facilities: tuple[str, ...] = ("fac-a",),
          key: KeySet | bytes = KEYS, ttl_s: int = 600, now: float | None = None,
          **claims: object) -> str:
    return session_tokens.issue(key, user_id=str(uuid.uuid4()), username=f"{role}-user",
                                role=role, facilities=list(facilities), ttl_s=ttl_s, now=now,
                                claims=dict(claims))


def md(value: str) -> tuple[tuple[str, str], ...]:
    return session_tokens.metadata(value)


async def refused(call: object, request: object, metadata: object = None) -> str:
    """The ErrorInfo reason of an UNAUTHENTICATED refusal."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(request, metadata=metadata)  # type: ignore[operator]
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, exc.value.details()
    info = error_info(exc.value)
    assert info is not None
    return info.reason


async def studies(s: Services, metadata: object) -> set[str]:
    reply = await s.review.ListWorklist(rpb.ListWorklistRequest(page_size=100),
                                        metadata=metadata)
    return {row.study.facility for row in reply.studies}


async def qido_facilities(s: Services, metadata: object) -> int:
    reply = await s.ingest.SearchStudies(ipb.SearchStudiesRequest(), metadata=metadata)
    return len(reply.dicom_json)


async def test_bad_tokens_are_refused_by_workflow_and_ingest(services: Services) -> None:
    s = services
    expired = token(now=time.time() - 3600, ttl_s=60)
    forged = token(role="admin", key=OTHER_KEY)
    garbage = "not-a-token"
    for call, request in [(s.review.ListWorklist, rpb.ListWorklistRequest()),
                          (s.review.GetStudyDetail,
                           rpb.GetStudyDetailRequest(study_id=str(s.seeded.study))),
                          (s.ingest.SearchStudies, ipb.SearchStudiesRequest())]:
        assert await refused(call, request) == "MISSING_TOKEN"
        assert await refused(call, request, md(expired)) == "TOKEN_EXPIRED"
        assert await refused(call, request, md(forged)) == "INVALID_TOKEN"
        assert await refused(call, request, md(garbage)) == "INVALID_TOKEN"
        assert await refused(call, request, (("authorization", "Basic x"),)) == "MISSING_TOKEN"
    # refusals are audited as security events, without the token itself
    async with s.db.read() as session:
        rows = (await session.scalars(select(m.AuditEvent).where(
            m.AuditEvent.type == REJECTED_EVENT))).all()
    assert {r.context["reason"] for r in rows} >= {"MISSING_TOKEN", "TOKEN_EXPIRED",
                                                    "INVALID_TOKEN"}
    assert {r.actor for r in rows} == {"workflow_svc", "ingest_svc"}
    dumped = json.dumps([r.context for r in rows])
    assert expired not in dumped and forged not in dumped
    assert all(r.context["identity"].endswith("/service/gateway") for r in rows)


async def test_a_revoked_token_is_refused(services: Services) -> None:
    s = services
    value = token(role="admin")
    me = session_tokens.verify(KEYS, value)
    assert await studies(s, md(value)) == {"fac-a", "fac-b"}
    # logout, as the gateway does it: RevokeSession with the session's own token
    revoke = rpb.RevokeSessionRequest(jti=me.jti)
    revoke.expires_at.FromSeconds(me.expires_at)
    # another user's token may not revoke it
    other = token(role="admin")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.review.RevokeSession(revoke, metadata=md(other))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await s.review.RevokeSession(revoke, metadata=md(value))
    assert await refused(s.review.ListWorklist, rpb.ListWorklistRequest(),
                         md(value)) == "TOKEN_REVOKED"
    assert await refused(s.ingest.SearchStudies, ipb.SearchStudiesRequest(),
                         md(value)) == "TOKEN_REVOKED"
    assert await studies(s, md(other)) == {"fac-a", "fac-b"}


async def test_scope_comes_from_the_token_only(services: Services) -> None:
    s = services
    rad_a = md(token(facilities=("fac-a",)))
    assert await studies(s, rad_a) == {"fac-a"}
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.review.GetStudyDetail(rpb.GetStudyDetailRequest(
            study_id=str(s.seeded.study_b)), metadata=rad_a)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    detail = await s.review.GetStudyDetail(rpb.GetStudyDetailRequest(
        study_id=str(s.seeded.study)), metadata=rad_a)
    assert detail.study.study.facility == "fac-a"
    all_count = await qido_facilities(s, md(token(role="auditor")))
    a_count = await qido_facilities(s, rad_a)
    b_count = await qido_facilities(s, md(token(facilities=("fac-b",))))
    assert a_count > 0 and b_count > 0 and a_count + b_count == all_count
    reply = await s.ingest.SearchStudies(ipb.SearchStudiesRequest(), metadata=rad_a)
    uids_a = {json.loads(j)["0020000D"]["Value"][0] for j in reply.dicom_json}
    async with s.db.read() as session:
        uid_b = await session.scalar(select(m.Study.study_instance_uid).where(
            m.Study.id == s.seeded.study_b))
    assert uid_b not in uids_a

    # no facilities and no fac_all: nothing at all, whatever the role says
    for nobody in (token(facilities=()), token(role="admin", fac_all=False),
                   token(role="radiologist", facilities=(), fac=[])):
        assert await studies(s, md(nobody)) == set()
        assert await qido_facilities(s, md(nobody)) == 0
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await s.review.GetStudyDetail(rpb.GetStudyDetailRequest(
                study_id=str(s.seeded.study)), metadata=md(nobody))
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    # every facility is an explicit claim
    assert await studies(s, md(token(role="auditor"))) == {"fac-a", "fac-b"}
    assert await studies(s, md(token(role="radiologist", fac_all=True))) == {"fac-a", "fac-b"}


async def test_the_operator_certificate_acts_as_an_all_facilities_admin(
        services: Services) -> None:
    """The `sidecar` CLI's operator credential needs no user token (and sees everything)."""
    async with test_pki.operator().aio_channel(services.workflow_address) as channel:
        review = rpb_grpc.ReviewServiceStub(channel)
        reply = await review.ListWorklist(rpb.ListWorklistRequest(page_size=100))
        assert {row.study.facility for row in reply.studies} == {"fac-a", "fac-b"}


async def test_services_with_only_the_public_key_verify_the_gateways_tokens(
        db: Database, tmp_path: Path) -> None:
    """EdDSA, the default: the gateway signs with its private key (its own data dir); the
    workflow and ingest services hold its public key only (SIDECAR_TOKEN_PUBLIC_KEYS). They
    accept its tokens and refuse one signed by another Ed25519 key, an HS256 token keyed with
    the public key (algorithm confusion), and cannot sign themselves."""
    gateway = GatewaySettings(data_dir=tmp_path / "gateway")
    signing = gateway.key_set()
    public = tmp_path / "gateway.pub"
    public.write_bytes((tmp_path / "gateway" / "token-signing.pub").read_bytes())
    verifier_dir = tmp_path / "verifier"
    with pytest.raises(TokenKeyError, match="SIDECAR_TOKEN_PUBLIC_KEYS"):
        CommonSettings(data_dir=verifier_dir).token_key_set()  # none given: refuses to start
    keys = CommonSettings(data_dir=verifier_dir, token_public_keys=str(public)).token_key_set()
    assert keys.current is None and keys.algorithm == ""
    with pytest.raises(TokenKeyError):
        token(key=keys)
    intruder = Ed25519PrivateKey.generate()
    async with serving(db, tmp_path, keys) as s:
        assert not (verifier_dir / "token-signing.key").exists()  # nothing to sign with
        assert await studies(s, md(token(role="admin", key=signing))) == {"fac-a", "fac-b"}
        rad = md(token(facilities=("fac-b",), key=signing))
        assert await studies(s, rad) == {"fac-b"}
        assert await qido_facilities(s, rad) > 0
        forged = token(role="admin", key=intruder)
        # HS256 keyed with the gateway's public PEM, naming the gateway's key id
        now = int(time.time())
        confused = pyjwt_hs256(public.read_bytes(), signing.current_kid, {
            "sub": str(uuid.uuid4()), "role": "admin", "fac_all": True, "iat": now,
            "exp": now + 600, "jti": uuid.uuid4().hex})
        for call, request in [(s.review.ListWorklist, rpb.ListWorklistRequest()),
                              (s.ingest.SearchStudies, ipb.SearchStudiesRequest())]:
            assert await refused(call, request, md(forged)) == "INVALID_TOKEN"
            assert await refused(call, request, md(confused)) == "INVALID_TOKEN"
            assert await refused(call, request, md(token(role="admin", key=KEYS))) == \
                "INVALID_TOKEN"  # an HS256 secret the services do not hold


def pyjwt_hs256(key: bytes, kid: str, claims: dict[str, object]) -> str:
    """An HS256 JWS made by hand (PyJWT itself refuses a PEM as an HMAC key)."""
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signed = (b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + b"."
              + b64(json.dumps(claims).encode()))
    return (signed + b"." + b64(hmac.new(key, signed, hashlib.sha256).digest())).decode()
