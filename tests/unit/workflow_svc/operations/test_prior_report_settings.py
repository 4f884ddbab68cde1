"""The prior reports' look-back and maximum are facility settings, through the one writer:
`sidecar facility set --prior-report-lookback-days N --prior-report-max M` and the admin API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar_app import cli
from sidecar_core.errors import InvalidArgument
from tests.unit.workflow_svc.operations.test_facility_settings import MODELS, Recorder
from workflow_svc.operations import facility_settings


class PriorRecorder(Recorder):
    async def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        view = await super().__call__(*args, **kwargs)
        return {**view, "prior_report_lookback_days": 365, "prior_report_max": 0}


@pytest.mark.parametrize(("name", "value"), [
    ("prior_report_lookback_days", 0), ("prior_report_lookback_days", 36501),
    ("prior_report_lookback_days", "365"), ("prior_report_lookback_days", 1.5),
    ("prior_report_max", -1), ("prior_report_max", 21), ("prior_report_max", True),
    ("prior_report_max", "5"),
])
def test_bad_values_are_refused_naming_the_field(name: str, value: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    with pytest.raises(InvalidArgument) as refused:
        facility_settings._validated(table, {name: value})
    assert refused.value.reason == "INVALID_FACILITY_SETTING"
    assert refused.value.metadata["field"] == name


@pytest.mark.parametrize(("name", "value", "stored"), [
    ("prior_report_lookback_days", 365, 365), ("prior_report_lookback_days", "", None),
    ("prior_report_max", 0, 0), ("prior_report_max", 20, 20), ("prior_report_max", None, None),
])
def test_accepted(name: str, value: Any, stored: Any) -> None:
    table = facility_settings.settings_table(MODELS)
    assert facility_settings._validated(table, {name: value}) == {name: stored}


def test_cli_facility_set(monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    writer = PriorRecorder()
    monkeypatch.setattr(facility_settings, "save", writer)
    args = cli.build_parser().parse_args(["facility", "set", "north", "--operator", "alice",
                                          "--prior-report-lookback-days", "365",
                                          "--prior-report-max", "0"])
    assert asyncio.run(cli._facility_admin(None, args)) == 0
    assert writer.calls[0]["given"] == {"prior_report_lookback_days": 365,
                                        "prior_report_max": 0}
    out = capsys.readouterr().out
    assert "prior_report_lookback_days=365" in out and "prior_report_max=0" in out
