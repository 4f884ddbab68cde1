"""Facility settings have one writer: the same rules and the same audit whichever door a change
comes in by (`sidecar facility add|set`, FacilityService, the admin API through it)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from google.protobuf import struct_pb2

from protos.sidecar.workflow.v1 import operations_service_pb2 as pb
from sidecar_app import cli
from sidecar_core.errors import InvalidArgument
from sidecar_core.messaging.subjects import Topology
from workflow_svc.operations import facility_settings
from workflow_svc.operations.servicer import FacilityServicer

MODELS = ["chest_ct_nodules", "mammo_masses"]


@pytest.mark.parametrize(("name", "value"), [
    ("llm_timeout_s", 0), ("llm_timeout_s", 0.5), ("llm_timeout_s", 601),
    ("quiet_period_s", -1), ("quiet_period_s", 3601),
    ("association_settle_s", -3), ("association_settle_s", 61),
    ("completion_mode", "whenever"), ("export_rejected", "sometimes"),
    ("ae_title", "A" * 17), ("ae_title", "BACK\\SLASH"), ("pacs_ae_title", "P" * 17),
    ("pacs_port", 0), ("pacs_port", 65536), ("handoff_url", "ftp://ris"),
    ("llm_base_url", "not a url"), ("hl7_sending_facility", "H" * 65),
    ("shadow_mode", "on"), ("enabled_models", ["no_such_model"]),
    ("dicom_require_client_cert", "on"), ("pacs_tls", 1),
    ("dicom_allowed_hosts", "10.0.0.1/8"), ("dicom_allowed_hosts", "pacs.example"),
    ("dicom_allowed_hosts", ["10.0.0.0/8"]),
    ("pacs_dicomweb_url", "ftp://pacs/dicom-web"), ("pacs_dicomweb_url", "pacs:8042"),
    ("pacs_dicomweb_auth", "Token abc"), ("pacs_dicomweb_auth", "Bearer a\r\nX-Evil: 1"),
    ("pacs_dicomweb_auth", "Basic bm9jb2xvbg=="), ("pacs_dicomweb_auth", 42),
])
def test_a_bad_value_is_refused_with_one_reason_naming_its_field(name: str, value: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    with pytest.raises(InvalidArgument) as refused:
        facility_settings._validated(table, {name: value})
    assert refused.value.reason == "INVALID_FACILITY_SETTING"
    assert refused.value.metadata["field"] == name
    assert refused.value.message.startswith(f"{name}: ")


@pytest.mark.parametrize(("name", "value", "stored"), [
    ("llm_timeout_s", 1, 1.0), ("llm_timeout_s", 600, 600.0), ("quiet_period_s", 0, 0.0),
    ("association_settle_s", 60, 60.0), ("pacs_port", 104, 104), ("pacs_port", "", None),
    ("ae_title", "A" * 16, "A" * 16), ("enabled_models", "all", None),
    ("enabled_models", ["mammo_masses", "mammo_masses"], ["mammo_masses"]),
    ("handoff_url", "", None),
    ("dicom_allowed_hosts", "10.0.0.0/8, 127.0.0.1", "10.0.0.0/8,127.0.0.1/32"),
    ("dicom_allowed_hosts", "", None), ("pacs_tls", True, True),
    ("dicom_require_client_cert", False, False),
    ("pacs_dicomweb_url", "https://pacs.example/dicom-web", "https://pacs.example/dicom-web"),
    ("pacs_dicomweb_url", "", None), ("pacs_dicomweb_auth", "", None),
    ("pacs_dicomweb_auth", "Bearer abc.DEF-1", "Bearer abc.DEF-1"),
    ("pacs_dicomweb_auth", "Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
])
def test_the_edges_of_each_rule_are_accepted(name: str, value: Any, stored: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    assert facility_settings._validated(table, {name: value}) == {table[name].column: stored}


class Recorder:
    """Stands in for the writer: records each call, answers with a plausible view."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, db: Any, topology: Topology, table: Any, name: str,
                       given: dict[str, Any], operator: str, create: bool, *,
                       via: str, egress: Any = None, box: Any = None) -> dict[str, Any]:
        self.calls.append({"name": name, "given": given, "operator": operator,
                           "create": create, "via": via})
        return {"name": name, "ae_title": None, "shadow_mode": False, "quiet_period_s": 5.0,
                "enabled_models": "all", "completion_mode": "quiet",
                "association_settle_s": 1.0, "hl7_sending_facility": None,
                "handoff_url": None, "handoff_secret": False, "llm_base_url": None,
                "llm_model": None, "llm_timeout_s": 30.0, "pacs_ae_title": None,
                "pacs_host": None, "pacs_port": None, "export_rejected": "omit",
                "dicom_require_client_cert": False, "dicom_allowed_hosts": None,
                "pacs_tls": False}


@pytest.fixture()
def writer(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(facility_settings, "save", recorder)
    return recorder


def _cli(*argv: str) -> None:
    args = cli.build_parser().parse_args(list(argv))
    assert asyncio.run(cli._facility_admin(None, args)) == 0


def test_cli_facility_set_is_one_call_of_the_writer_with_its_operator(writer: Recorder) -> None:
    _cli("facility", "set", "north", "--operator", "alice", "--quiet-period", "30",
         "--shadow-mode", "on", "--models", "chest_ct_nodules", "--completion", "association",
         "--settle", "2", "--llm-timeout", "0", "--pacs", "PACS@10.0.0.5:104",
         "--export-rejected", "include")
    assert writer.calls == [{
        "name": "north", "operator": "alice", "create": False, "via": "cli",
        "given": {"quiet_period_s": 30.0, "shadow_mode": True,
                  "enabled_models": ["chest_ct_nodules"], "completion_mode": "association",
                  "association_settle_s": 2.0, "llm_timeout_s": 0.0,
                  "export_rejected": "include", "pacs_ae_title": "PACS",
                  "pacs_host": "10.0.0.5", "pacs_port": 104}}]


def test_cli_facility_add_and_clearing_the_pacs_go_through_the_writer(writer: Recorder) -> None:
    _cli("facility", "add", "east", "--ae-title", "EAST_CT", "--shadow-mode",
         "--operator", "bob")
    _cli("facility", "set", "east", "--pacs", "", "--models", "all", "--operator", "bob")
    assert writer.calls == [
        {"name": "east", "operator": "bob", "create": True, "via": "cli",
         "given": {"ae_title": "EAST_CT", "shadow_mode": True}},
        {"name": "east", "operator": "bob", "create": False, "via": "cli",
         "given": {"enabled_models": "all", "pacs_ae_title": "", "pacs_host": "",
                   "pacs_port": None}}]


def test_cli_operator_defaults_to_the_login_name(writer: Recorder,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "carol")
    _cli("facility", "set", "north", "--quiet-period", "1")
    assert writer.calls[0]["operator"] == "carol"


def test_facility_service_calls_the_same_writer(writer: Recorder) -> None:
    servicer = FacilityServicer(None, Topology(), MODELS)  # type: ignore[arg-type]
    settings = struct_pb2.Struct()
    settings.update({"llm_timeout_s": 0})
    asyncio.run(servicer.UpdateFacility(pb.UpdateFacilityRequest(
        name="north", settings=settings, operator="dana"), None))  # type: ignore[arg-type]
    assert writer.calls == [{"name": "north", "operator": "dana", "create": False, "via": "api",
                             "given": {"llm_timeout_s": 0.0}}]


def test_the_writer_refuses_a_change_without_an_operator() -> None:
    table = facility_settings.settings_table(MODELS)
    with pytest.raises(InvalidArgument) as refused:
        asyncio.run(facility_settings.save(None, Topology(), table,  # type: ignore[arg-type]
                                           "north", {}, "  ", False, via="cli"))
    assert refused.value.reason == "OPERATOR_REQUIRED"


def test_cli_facility_set_dicom_tls_rules(writer: Recorder) -> None:
    _cli("facility", "set", "north", "--operator", "alice", "--dicom-require-client-cert", "on",
         "--dicom-allowed-hosts", "10.0.0.0/8", "--pacs-tls", "off")
    assert writer.calls[0]["given"] == {"dicom_require_client_cert": True,
                                        "dicom_allowed_hosts": "10.0.0.0/8", "pacs_tls": False}


def test_cli_facility_set_dicomweb_pacs(writer: Recorder, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Bearer tok-1\r\n"))
    _cli("facility", "set", "north", "--operator", "alice", "--pacs-dicomweb",
         "https://pacs.example/dicom-web", "--pacs-dicomweb-auth-stdin")
    _cli("facility", "set", "north", "--operator", "alice", "--pacs-dicomweb", "")
    assert [c["given"] for c in writer.calls] == [
        {"pacs_dicomweb_url": "https://pacs.example/dicom-web",
         "pacs_dicomweb_auth": "Bearer tok-1"},
        {"pacs_dicomweb_url": ""}]


def test_the_dicomweb_credential_is_a_secret_setting() -> None:
    table = facility_settings.settings_table(MODELS)
    assert table["pacs_dicomweb_auth"].secret and table["pacs_dicomweb_url"].outbound
