"""One facility-settings writer on a real PostgreSQL: the CLI (`sidecar facility`), the
FacilityService over gRPC and the admin API of a real gateway refuse the same bad value with
the same reason and message, and a change made with the CLI is audited with its operator."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import text

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from protos.sidecar.workflow.v1 import operations_service_pb2_grpc as pb_grpc
from review_gateway.app import create_app
from review_gateway.settings import GatewaySettings
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.registry import load_registry
from sidecar_core.serving.grpc_server import GrpcServer, error_info
from tests import pki as test_pki
from workflow_svc.identity import users
from workflow_svc.operations import servicer as operations_servicer
from workflow_svc.review import servicer as review_servicer

pytestmark = pytest.mark.integration

SECRET = "facility-secret-" + "z" * 40
# The key that seals secret settings, given to the CLI as an operator would (no key file in
# the working folder); no SIDECAR_EGRESS_ALLOW: every door applies the strict outbound rules.
SECRET_KEY = base64.b64encode(os.urandom(32)).decode()
PASSWORD = "correct horse battery staple"
# The CLI's audit events go to its default topology; the gateway and servicers use this one.
TOPOLOGY = Topology()


@dataclass
class Doors:
    database_url: str
    db: Database
    grpc: pb_grpc.FacilityServiceStub
    http: httpx.AsyncClient
    token: str

    def cli(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar_app.cli", "facility", *argv,
             "--database-url", self.database_url],
            input=stdin, capture_output=True, text=True, timeout=120,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
                 "SIDECAR_SECRET_KEY": SECRET_KEY})


@pytest.fixture()
async def doors(database_url: str, db: Database, tmp_path: Path) -> AsyncIterator[Doors]:
    await users.add_user(db, "admin", PASSWORD, "admin")
    server = GrpcServer("127.0.0.1:0", test_pki.service("workflow"))
    review_servicer.register(server, db, TOPOLOGY)
    operations_servicer.register(server, None, db, TOPOLOGY,  # type: ignore[arg-type]
                                 load_registry().names())
    port = await server.start()
    test_pki.install(tmp_path)
    settings = GatewaySettings(data_dir=tmp_path, object_store_dir=tmp_path / "objects",
                               workflow_address=f"127.0.0.1:{port}", token_secret=SECRET,
                               nats_url="", revocation_cache_s=0)
    app = create_app(settings)
    channel = test_pki.aio_channel(f"127.0.0.1:{port}", "gateway")
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            login = await http.post("/api/v1/auth/login",
                                    json={"username": "admin", "password": PASSWORD})
            assert login.status_code == 200, login.text
            yield Doors(database_url, db, pb_grpc.FacilityServiceStub(channel), http,
                        login.json()["access_token"])
    finally:
        await channel.close()
        await server.stop(0)


async def _via_api(doors: Doors, name: str, settings: dict[str, Any]) -> tuple[str, str]:
    reply = await doors.http.patch(f"/api/v1/admin/facilities/{name}",
                                   json={"settings": settings},
                                   headers={"Authorization": f"Bearer {doors.token}"})
    assert reply.status_code in (400, 409), reply.text
    error = reply.json()["error"]
    return error["reason"], error["message"]


async def _via_grpc(doors: Doors, name: str, settings: dict[str, Any]) -> tuple[str, str]:
    values = struct_pb2.Struct()
    values.update(settings)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await doors.grpc.UpdateFacility(pb.UpdateFacilityRequest(
            name=name, settings=values, operator="grpc-op"))
    info = error_info(refused.value)
    assert info is not None
    return info.reason, refused.value.details() or ""


def _via_cli(doors: Doors, *flags: str) -> tuple[str, str]:
    done = doors.cli("set", "north", *flags, "--operator", "cli-op")
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    reason, _, message = line.removeprefix("sidecar facility set: error: ").partition(": ")
    return reason, message


# (CLI flags, the same change as API settings): the rules that differed between the old writers
CASES: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--llm-timeout", "0"), {"llm_timeout_s": 0}),
    (("--llm-timeout", "0.5"), {"llm_timeout_s": 0.5}),
    (("--llm-timeout", "601"), {"llm_timeout_s": 601}),
    (("--ae-title", "SEVENTEEN_CHARS_X"), {"ae_title": "SEVENTEEN_CHARS_X"}),
    (("--quiet-period", "3601"), {"quiet_period_s": 3601}),
    (("--settle", "-3"), {"association_settle_s": -3}),
    (("--pacs", "PACS@host:0"), {"pacs_ae_title": "PACS", "pacs_host": "host", "pacs_port": 0}),
    (("--handoff-url", "ftp://ris"), {"handoff_url": "ftp://ris"}),
    (("--models", "no_such_model"), {"enabled_models": ["no_such_model"]}),
    # the outbound rules (sidecar_core.egress), the same at every door
    (("--handoff-url", "http://169.254.169.254/latest/meta-data"),
     {"handoff_url": "http://169.254.169.254/latest/meta-data"}),
    (("--llm-url", "https://127.0.0.1:9/v1"), {"llm_base_url": "https://127.0.0.1:9/v1"}),
    (("--handoff-url", "http://10.9.8.7/hook"), {"handoff_url": "http://10.9.8.7/hook"}),
    (("--pacs", "PACS@127.0.0.1:104"),
     {"pacs_ae_title": "PACS", "pacs_host": "127.0.0.1", "pacs_port": 104}),
    # the DICOMweb PACS of the priors (issue 23): an http(s) URL passing the egress policy
    (("--pacs-dicomweb", "ftp://pacs/dicom-web"), {"pacs_dicomweb_url": "ftp://pacs/dicom-web"}),
    (("--pacs-dicomweb", "http://169.254.169.254/dicom-web"),
     {"pacs_dicomweb_url": "http://169.254.169.254/dicom-web"}),
    (("--pacs-dicomweb", "http://93.184.216.34/dicom-web"),
     {"pacs_dicomweb_url": "http://93.184.216.34/dicom-web"}),
]


async def test_every_door_refuses_the_same_value_with_the_same_reason(doors: Doors) -> None:
    made = doors.cli("add", "north", "--ae-title", "NORTH_CT", "--operator", "cli-op")
    assert made.returncode == 0, made.stderr
    made = doors.cli("add", "south", "--ae-title", "SOUTH_CT", "--operator", "cli-op")
    assert made.returncode == 0, made.stderr
    for flags, settings in CASES:
        api = await _via_api(doors, "north", settings)
        rpc = await _via_grpc(doors, "north", settings)
        cli = _via_cli(doors, *flags)
        assert api == rpc == cli, (flags, api, rpc, cli)
        assert api[0] == "INVALID_FACILITY_SETTING", api
    # one clash, one reason: the AE title of another facility
    clash = ("AE_TITLE_TAKEN", "ae_title: 'SOUTH_CT' belongs to another facility")
    assert await _via_api(doors, "north", {"ae_title": "SOUTH_CT"}) == clash
    assert await _via_grpc(doors, "north", {"ae_title": "SOUTH_CT"}) == clash
    assert _via_cli(doors, "--ae-title", "SOUTH_CT") == clash
    async with doors.db.read() as s:
        stored = (await s.execute(text(
            "select ae_title, llm_timeout_s, quiet_period_s from facilities "
            "where name = 'north'"))).one()
    assert stored.ae_title == "NORTH_CT" and stored.quiet_period_s != 3601, "nothing stored"
    assert await _via_api(doors, "north", {"handoff_url": "http://169.254.169.254/x"}) == (
        "INVALID_FACILITY_SETTING", "handoff_url: http://169.254.169.254:80: a cloud metadata "
        "address is refused unless listed in SIDECAR_EGRESS_ALLOW")
    assert (await _via_api(doors, "north", {"handoff_url": "http://10.9.8.7/hook"}))[1] == (
        "handoff_url: http://10.9.8.7:80: https is required unless the destination is listed "
        "in SIDECAR_EGRESS_ALLOW")


async def test_a_cli_change_is_audited_with_its_operator(doors: Doors) -> None:
    assert doors.cli("add", "north", "--operator", "alice").returncode == 0
    done = doors.cli("set", "north", "--quiet-period", "7", "--llm-timeout", "45",
                     "--handoff-secret-stdin", "--operator", "alice", stdin="s3cret\n")
    assert done.returncode == 0, done.stderr
    async with doors.db.read() as s:
        events = (await s.execute(text(
            "select type, actor, facility, context from audit_events "
            "where type like 'facility.%' order by seq"))).all()
    assert [(e.type, e.actor, e.facility) for e in events] == [
        ("facility.created", "operator:alice", "north"),
        ("facility.updated", "operator:alice", "north")]
    assert events[1].context == {
        "operator": "alice", "via": "cli",
        "settings": {"quiet_period_s": 7.0, "llm_timeout_s": 45.0, "handoff_secret": "(set)"}}
    # stored sealed (not the plaintext), and no door shows it
    async with doors.db.read() as s:
        stored = (await s.execute(text(
            "select handoff_secret from facilities where name = 'north'"))).scalar_one()
    assert stored.startswith("sealed:v1:") and "s3cret" not in stored
    listed = await doors.http.get("/api/v1/admin/facilities",
                                  headers={"Authorization": f"Bearer {doors.token}"})
    assert listed.status_code == 200 and "s3cret" not in listed.text
    assert "sealed:v1" not in listed.text
    north = [f for f in listed.json()["facilities"] if f["name"] == "north"][0]
    assert north["handoff_secret"] is True
    api = await doors.http.patch("/api/v1/admin/facilities/north",
                                 json={"settings": {"shadow_mode": True}},
                                 headers={"Authorization": f"Bearer {doors.token}"})
    assert api.status_code == 200, api.text
    async with doors.db.read() as s:
        last = (await s.execute(text(
            "select actor, context from audit_events where type = 'facility.updated' "
            "order by seq desc limit 1"))).one()
    assert last.actor == "operator:admin"
    assert last.context == {"operator": "admin", "via": "api",
                            "settings": {"shadow_mode": True}}


async def test_the_dicomweb_pacs_credential_is_sealed_and_never_shown(doors: Doors) -> None:
    assert doors.cli("add", "north", "--operator", "alice").returncode == 0
    done = doors.cli("set", "north", "--pacs-dicomweb", "https://93.184.216.34/dicom-web",
                     "--pacs-dicomweb-auth-stdin", "--operator", "alice",
                     stdin="Bearer pacs-token-1\n")
    assert done.returncode == 0, done.stderr
    assert "pacs-token-1" not in done.stdout + done.stderr
    async with doors.db.read() as s:
        row = (await s.execute(text(
            "select pacs_dicomweb_url, pacs_dicomweb_auth from facilities "
            "where name = 'north'"))).one()
        [event] = (await s.execute(text(
            "select context from audit_events where type = 'facility.updated'"))).scalars()
    assert row.pacs_dicomweb_url == "https://93.184.216.34/dicom-web"
    assert row.pacs_dicomweb_auth.startswith("sealed:v1:") and "pacs-token" not in str(row)
    assert event["settings"] == {"pacs_dicomweb_url": "https://93.184.216.34/dicom-web",
                                 "pacs_dicomweb_auth": "(set)"}
    listed = await doors.http.get("/api/v1/admin/facilities",
                                  headers={"Authorization": f"Bearer {doors.token}"})
    north = [f for f in listed.json()["facilities"] if f["name"] == "north"][0]
    assert north["pacs_dicomweb_auth"] is True and "pacs-token" not in listed.text
    # a value that is not an Authorization header value is refused, at every door alike
    bad = {"pacs_dicomweb_auth": "pacs-token-1"}
    api, rpc = await _via_api(doors, "north", bad), await _via_grpc(doors, "north", bad)
    cli = doors.cli("set", "north", "--pacs-dicomweb-auth-stdin", "--operator", "alice",
                    stdin="pacs-token-1\n")
    assert api == rpc and api[0] == "INVALID_FACILITY_SETTING"
    assert api[1].startswith('pacs_dicomweb_auth: an Authorization header value: either '
                             '"Bearer TOKEN" or "Basic BASE64"'), api
    assert cli.returncode == 2 and api[1] in cli.stderr
