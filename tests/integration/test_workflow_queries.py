"""The workflow read side and users on a real PostgreSQL, directly and over a real gRPC server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from protos.sidecar.common.v1 import common_pb2
from protos.sidecar.workflow.v1 import review_service_pb2 as rpb
from protos.sidecar.workflow.v1 import workflow_service_pb2 as pb
from protos.sidecar.workflow.v1 import workflow_service_pb2_grpc as pb_grpc
from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from sidecar_core.messaging.subjects import Topology
from sidecar_core.security import session_tokens
from sidecar_core.security.session_tokens import KeySet
from sidecar_core.security.user_auth import user_authentication
from sidecar_core.serving.grpc_server import GrpcServer, error_info
from sidecar_core.storage.objectstore import ObjectStore
from sidecar_core.store import models as m
from tests import pki as test_pki
from workflow_svc.identity import users
from workflow_svc.identity.access import Caller
from workflow_svc.operations import facility_settings
from workflow_svc.review import decisions
from workflow_svc.study import queries, servicer

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
ADMIN = Caller("", "admin", "admin", all_facilities=True)
RAD_B = Caller("", "rad-b", "radiologist", ("fac-b",))
TOKEN_KEYS = KeySet(b"workflow-queries-" + b"t" * 40)


def user_token(role: str, facilities: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The metadata the gateway sends for a user of `role` (session token signed with
    TOKEN_KEYS)."""
    return session_tokens.metadata(session_tokens.issue(
        TOKEN_KEYS, user_id=str(uuid.uuid4()), username=role, role=role,
        facilities=list(facilities), ttl_s=600))


@dataclass
class Seeded:
    """Ids of the fixture rows (facility A: three studies; facility B: one)."""

    study: uuid.UUID  # facility A, ACC-1, ready_for_review, with series, assets, findings
    others_a: list[uuid.UUID]
    study_b: uuid.UUID
    series: uuid.UUID
    assets: dict[str, uuid.UUID] = field(default_factory=dict)
    asset_bytes: dict[str, bytes] = field(default_factory=dict)
    findings: dict[str, uuid.UUID] = field(default_factory=dict)
    audit_types: list[str] = field(default_factory=list)


async def add_facility(db: Database, name: str, **settings: object) -> None:
    """Through the one facility-settings writer, as `sidecar facility add` does."""
    await facility_settings.save(db, Topology(), facility_settings.settings_table([]), name,
                                 settings, "test", True, via="test")


async def seed(db: Database, store: ObjectStore) -> Seeded:
    """Facilities, users, studies with history, series, assets (bytes in `store`), findings..."""
    await add_facility(db, "fac-a", ae_title="FACA")
    await add_facility(db, "fac-b", shadow_mode=True)
    await users.add_user(db, "rad-a", PASSWORD, "radiologist", "fac-a")
    await users.add_user(db, "rad-b", PASSWORD, "radiologist", "fac-b")
    await users.add_user(db, "admin", PASSWORD, "admin")
    await users.add_user(db, "auditor", PASSWORD, "auditor")
    async with db.unit_of_work() as s:
        fac = {f.name: f.id for f in (await s.scalars(select(m.Facility))).all()}
    ids = [uuid.uuid4() for _ in range(4)]
    seeded = Seeded(study=ids[0], others_a=ids[1:3], study_b=ids[3], series=uuid.uuid4())
    rows: list[object] = []
    for i, (sid, facility, acc, state) in enumerate([
        (ids[0], "fac-a", "ACC-1", "ready_for_review"), (ids[1], "fac-a", "ACC-2", "ineligible"),
        (ids[2], "fac-a", "ACC-3", "received"), (ids[3], "fac-b", "ACC-B1", "ready_for_review"),
    ]):
        rows.append(m.Study(
            id=sid, facility_id=fac[facility], accession=acc, study_instance_uid=f"1.2.3.{i + 1}",
            modality="CT", state=state, eligible=state != "ineligible",
            eligibility_reason="chest CT is covered" if state != "ineligible" else "no model",
            eligible_models=["chest-ct-nodules"], ai_status="completed" if i == 0 else "",
            partial=i == 2, created_at=T0 + timedelta(minutes=i)))
    states = ["received", "processed", "ai_complete", "ready_for_review"]
    for n, state in enumerate(states):
        rows.append(m.StateTransition(study_id=ids[0], from_state=states[n - 1] if n else None,
                                      to_state=state, actor="workflow", reason=f"step {n}",
                                      at=T0 + timedelta(seconds=10 * n)))
    rows.append(m.Series(id=seeded.series, study_id=ids[0], series_instance_uid="1.2.3.1.1",
                         modality="CT", body_part="CHEST", description="Axial 1mm",
                         instance_count=2, slice_count=2, preprocess_status="done",
                         presets=["lung", "mediastinum"],
                         slice_refs=[["1.2.3.1.1.1", 1], ["1.2.3.1.1.2", 1]],
                         windows={"lung": {"center": -600, "width": 1500, "function": "LINEAR"},
                                  "mediastinum": {"center": 40, "width": 400,
                                                  "function": "LINEAR"}}))
    for name, kind, preset, index, ctype in [
        ("thumb", "thumbnail", "", -1, "image/png"),
        ("vp0-lung", "viewport", "lung", 0, "image/png"),
        ("vp1-lung", "viewport", "lung", 1, "image/png"),
        ("vp0-med", "viewport", "mediastinum", 0, "image/png"),
        ("preview", "preview", "", -1, "image/gif"),
        ("model", "model_input", "", -1, "application/octet-stream"),
        ("ov1-lung", "overlay", "lung", 1, "image/png"),
    ]:
        data = f"{name}-bytes".encode() * 10
        key = store.put(data)
        aid = uuid.uuid4()
        seeded.assets[name], seeded.asset_bytes[name] = aid, data
        sop = f"1.2.3.1.1.{index + 1}" if index >= 0 else ""
        rows.append(m.Asset(id=aid, study_id=ids[0], series_id=seeded.series, kind=kind,
                            preset=preset, slice_index=index, object_key=key, content_type=ctype,
                            sha256=key.removeprefix("sha256/"), sop_instance_uid=sop,
                            frame=1 if sop else 0))
    run_id = uuid.uuid4()
    rows.append(m.AiRun(id=run_id, study_id=ids[0], series_id=seeded.series,
                        model_name="chest-ct-nodules", model_version="1.0", status="completed"))
    for n, (name, kind, visible, extra) in enumerate([
        ("nodule", "box", True, {"bbox_px": [10, 20, 30, 40], "center_mm": [1.5, -2.0, 30.0],
                                 "measurements": {"diameter_mm": 6.5},
                                 "sop_instance_uid": "1.2.3.1.1.2"}),
        ("summary", "classification", True, {}),
        ("shadow", "point", False, {"points_px": [5, 6]}),
    ]):
        fid = uuid.uuid4()
        seeded.findings[name] = fid
        rows.append(m.Finding(id=fid, ai_run_id=run_id, study_id=ids[0],
                              model_name="chest-ct-nodules", model_version="1.0", label=name,
                              confidence=0.9 - n / 10, kind=kind, visible=visible,
                              series_instance_uid="1.2.3.1.1", frame=1,
                              created_at=T0 + timedelta(seconds=n), **extra))
    # Inserted out of time order; one carries only the study key (recorded before the id).
    for offset, etype, sid in [(30, "ai_run.completed", ids[0]), (0, "study.received", None),
                               (20, "ai_run.failed", ids[0]), (5, "study.received", ids[3])]:
        rows.append(m.AuditEvent(
            type=etype, at=T0 + timedelta(seconds=offset), actor="workflow", study_id=sid,
            facility="fac-a" if sid != ids[3] else "fac-b",
            accession="ACC-1" if sid != ids[3] else "ACC-B1",
            study_instance_uid="1.2.3.1" if sid != ids[3] else "1.2.3.4",
            job_id="job-1" if etype == "ai_run.failed" else "", attempt=2 if sid else 0,
            error_class="TritonUnavailable" if etype == "ai_run.failed" else "",
            context={"model": "chest-ct-nodules", "n": 1}))
    seeded.audit_types = ["study.received", "ai_run.failed", "ai_run.completed"]
    async with db.unit_of_work() as s:
        for row in rows:
            s.add(row)
            await s.flush()
    return seeded


@pytest.fixture()
async def seeded(db: Database, tmp_path: Path) -> Seeded:
    return await seed(db, ObjectStore(tmp_path / "objects", fsync=False))


async def test_get_study_has_history_series_and_assets(db: Database, seeded: Seeded) -> None:
    reply = await queries.get_study(db, str(seeded.study), ["fac-a"])
    assert reply.study.accession == "ACC-1"
    assert [(t.from_state, t.state) for t in reply.state_history] == [
        ("", "received"), ("received", "processed"), ("processed", "ai_complete"),
        ("ai_complete", "ready_for_review")]
    (series,) = reply.series
    assert series.series_id == str(seeded.series) and series.slice_count == 2
    assert list(series.presets) == ["lung", "mediastinum"]
    assert {a.asset_id for a in series.assets} == {str(v) for v in seeded.assets.values()}
    for scope in (["fac-b"], ["nowhere"]):
        with pytest.raises(NotFound):
            await queries.get_study(db, str(seeded.study), scope)
    with pytest.raises(NotFound):
        await queries.get_study(db, str(uuid.uuid4()), None)
    with pytest.raises(InvalidArgument) as exc:
        await queries.get_study(db, "not-a-uuid", None)
    assert exc.value.reason == "INVALID_STUDY_ID"


async def test_findings_hide_shadow_ones_unless_asked(db: Database, seeded: Seeded) -> None:
    reply = await decisions.list_findings(db, str(seeded.study), ADMIN)
    assert [f.finding.label for f in reply] == ["nodule", "summary"]
    nodule = reply[0].finding
    assert nodule.kind == common_pb2.FINDING_KIND_BOX
    assert list(nodule.bbox_px) == [10, 20, 30, 40] and list(nodule.center_mm) == [1.5, -2.0, 30]
    assert [(x.name, x.value) for x in nodule.measurements] == [("diameter_mm", 6.5)]
    assert {f.state.finding_id: f.state.review_status for f in reply} == {
        str(seeded.findings["nodule"]): "pending", str(seeded.findings["summary"]): "pending"}
    hidden = await decisions.list_findings(db, str(seeded.study), ADMIN, include_hidden=True)
    assert [f.finding.label for f in hidden] == ["nodule", "summary", "shadow"]
    assert [f.state.visible for f in hidden] == [True, True, False]
    with pytest.raises(NotFound):
        await decisions.list_findings(db, str(seeded.study), RAD_B)


async def test_audit_events_by_time_including_key_matched(db: Database, seeded: Seeded) -> None:
    reply = await queries.list_audit_events(db, str(seeded.study), None)
    assert [e.type for e in reply.events] == seeded.audit_types
    failed = reply.events[1]
    assert failed.job_id == "job-1" and failed.attempt == 2
    assert failed.error_class == "TritonUnavailable"
    assert dict(failed.context) == {"model": "chest-ct-nodules", "n": 1.0}
    assert failed.study.accession == "ACC-1"
    types, token = [], ""
    while True:
        page = await queries.list_audit_events(db, str(seeded.study), None, page_size=1,
                                               page_token=token)
        types += [e.type for e in page.events]
        if not (token := page.next_page_token):
            break
    assert types == seeded.audit_types


async def test_key_slice_from_the_slice_order_or_else_old_viewport_rows(
        db: Database, seeded: Seeded) -> None:
    def nodule_slice(reply: list[rpb.ReviewFinding]) -> tuple[int, str]:
        [state] = [f.state for f in reply if f.finding.label == "nodule"]
        return state.slice_index, state.series_id

    async with db.unit_of_work() as s:  # the order alone, no viewport rows
        await s.execute(m.Asset.__table__.delete().where(m.Asset.kind == "viewport"))
        await s.execute(m.Series.__table__.update().where(m.Series.id == seeded.series)
                        .values(slice_refs=[["1.2.3.1.1.9", 1], ["1.2.3.1.1.2", 1]]))
    assert nodule_slice(await decisions.list_findings(db, str(seeded.study), ADMIN)) == (
        1, str(seeded.series))
    async with db.unit_of_work() as s:  # a series stored before the order was: its old rows
        await s.execute(m.Series.__table__.update().where(m.Series.id == seeded.series)
                        .values(slice_refs=None))
        s.add(m.Asset(study_id=seeded.study, series_id=seeded.series, kind="viewport",
                      preset="lung", slice_index=7, object_key="sha256/00", content_type="x",
                      sha256="00", sop_instance_uid="1.2.3.1.1.2", frame=1))
    assert nodule_slice(await decisions.list_findings(db, str(seeded.study), ADMIN)) == (
        7, str(seeded.series))


async def test_get_asset_by_id_and_by_slice(db: Database, seeded: Seeded) -> None:
    reply = await queries.get_asset(db, str(seeded.study), str(seeded.assets["thumb"]), None)
    assert reply.asset.kind == "thumbnail" and reply.object_key.startswith("sha256/")
    vp = await queries.get_asset(db, str(seeded.study), "", None, series_id=str(seeded.series),
                                 kind="viewport", preset="lung", slice_index=1)
    assert vp.asset.asset_id == str(seeded.assets["vp1-lung"])
    with pytest.raises(NotFound):
        await queries.get_asset(db, str(seeded.study), "", None, series_id=str(seeded.series),
                                kind="viewport", preset="mediastinum", slice_index=1)
    with pytest.raises(NotFound):  # the asset exists, but not in that study
        await queries.get_asset(db, str(seeded.study_b), str(seeded.assets["thumb"]), None)
    with pytest.raises(NotFound):
        await queries.get_asset(db, str(seeded.study), str(seeded.assets["thumb"]), ["fac-b"])
    with pytest.raises(InvalidArgument):
        await queries.get_asset(db, str(seeded.study), "", None)


async def test_users_authenticate_with_role_and_facility(db: Database, seeded: Seeded) -> None:
    rad = await users.authenticate(db, "rad-a", PASSWORD)
    assert (rad.role, rad.facilities) == ("radiologist", ("fac-a",))
    admin = await users.authenticate(db, "admin", PASSWORD)
    assert (admin.role, admin.facilities) == ("admin", ())
    for name, password in [("rad-a", "wrong"), ("nobody", PASSWORD), ("rad-a", ""), ("", "")]:
        with pytest.raises(Unauthenticated) as exc:
            await users.authenticate(db, name, password)
        assert exc.value.reason == "BAD_CREDENTIALS"
    with pytest.raises(AlreadyExists):
        await users.add_user(db, "rad-a", PASSWORD, "radiologist", "fac-a")
    with pytest.raises(AlreadyExists):
        await add_facility(db, "fac-a")
    with pytest.raises(NotFound):
        await users.add_user(db, "rad-x", PASSWORD, "radiologist", "fac-x")
    for role, facility in [("radiologist", None), ("admin", "fac-a"), ("root", None)]:
        with pytest.raises(InvalidArgument):
            await users.add_user(db, "someone", PASSWORD, role, facility)


@pytest.fixture()
async def workflow_stub(db: Database) -> AsyncIterator[pb_grpc.WorkflowServiceStub]:
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"), interceptors=[
        user_authentication(db, Topology(), "workflow_svc", TOKEN_KEYS, 0)])
    servicer.register(server, db)
    port = await server.start()
    channel = test_pki.aio_channel(f"127.0.0.1:{port}", "gateway")
    try:
        yield pb_grpc.WorkflowServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


async def test_servicer_over_grpc(seeded: Seeded,
                                  workflow_stub: pb_grpc.WorkflowServiceStub) -> None:
    admin = user_token("admin", ())
    events = await workflow_stub.ListAuditEvents(
        pb.ListAuditEventsRequest(study_id=str(seeded.study)), metadata=admin)
    assert [e.type for e in events.events] == seeded.audit_types
    asset = await workflow_stub.GetAsset(pb.GetAssetRequest(
        study_id=str(seeded.study), series_id=str(seeded.series), kind="overlay", preset="lung",
        slice_index=1), metadata=admin)
    assert asset.asset.asset_id == str(seeded.assets["ov1-lung"])
    for call, request, code, reason in [
        (workflow_stub.ListAuditEvents, pb.ListAuditEventsRequest(
            study_id=str(seeded.study)), grpc.StatusCode.NOT_FOUND, "STUDY_NOT_FOUND"),
        (workflow_stub.GetAsset, pb.GetAssetRequest(study_id="x", asset_id="y"),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_STUDY_ID"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:  # a radiologist of fac-b
            await call(request, metadata=user_token("radiologist", ("fac-b",)))
        assert exc.value.code() == code
        info = error_info(exc.value)
        assert info is not None and info.reason == reason


async def test_removed_rpcs_are_gone_and_passwords_are_checked_only_by_login(
        db: Database, seeded: Seeded) -> None:
    """Contracts release 2: ListStudies, GetStudy, ListFindings and AuthenticateUser (a password
    check without the login rate limit) are not served; ReviewService.Login is the way in."""
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
    servicer.register(server, db)
    port = await server.start()
    try:
        async with test_pki.aio_channel(f"127.0.0.1:{port}", "gateway") as channel:
            for method in ("ListStudies", "GetStudy", "ListFindings", "AuthenticateUser"):
                call = channel.unary_unary(f"/sidecar.workflow.v1.WorkflowService/{method}")
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await call(b"")
                assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
            # the same kind of call of a method that is kept is answered
            kept = channel.unary_unary("/sidecar.workflow.v1.WorkflowService/ListAuditEvents",
                                       response_deserializer=pb.ListAuditEventsResponse.FromString)
            reply = await kept(pb.ListAuditEventsRequest(
                study_id=str(seeded.study)).SerializeToString())
            assert [e.type for e in reply.events] == seeded.audit_types
    finally:
        await server.stop(0)
