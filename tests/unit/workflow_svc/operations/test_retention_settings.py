"""The retention settings go through the one facility-settings writer: `sidecar facility set
--retention-days N --report-retention-days M`, and the admin API's FacilityService alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar_app import cli
from sidecar_core.errors import InvalidArgument
from tests.unit.workflow_svc.operations.test_facility_settings import MODELS, Recorder
from workflow_svc.operations import facility_settings


class RetentionRecorder(Recorder):
    async def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        view = await super().__call__(*args, **kwargs)
        return {**view, "retention_days": 30, "report_retention_days": None}


@pytest.fixture()
def writer(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = RetentionRecorder()
    monkeypatch.setattr(facility_settings, "save", recorder)
    return recorder


@pytest.mark.parametrize("value", [0, -1, 36501, 1.5, "30", True])
def test_bad_days_are_refused_naming_the_field(value: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    for name in ("retention_days", "report_retention_days"):
        with pytest.raises(InvalidArgument) as refused:
            facility_settings._validated(table, {name: value})
        assert refused.value.reason == "INVALID_FACILITY_SETTING"
        assert refused.value.metadata["field"] == name


@pytest.mark.parametrize(("value", "stored"), [(1, 1), (36500, 36500), (30.0, 30), ("", None),
                                               (None, None)])
def test_days_accepted(value: Any, stored: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    assert facility_settings._validated(table, {"retention_days": value}) == {
        "retention_days": stored}


def test_cli_facility_set_retention(writer: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["facility", "set", "north", "--operator", "alice",
                                          "--retention-days", "30",
                                          "--report-retention-days", "0"])
    assert asyncio.run(cli._facility_admin(None, args)) == 0
    assert writer.calls[0]["given"] == {"retention_days": 30, "report_retention_days": None}
    assert writer.calls[0]["via"] == "cli" and writer.calls[0]["operator"] == "alice"
    assert "retention_days=30" in capsys.readouterr().out


def test_cli_refuses_a_bad_number_of_days() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["facility", "set", "north", "--retention-days", "-3"])
