"""`sidecar audit access`: --since forms, every filter a bound parameter, the table's rows."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from sidecar_app.audit_cli import access_query, since_of, trail_row
from sidecar_app.errors import UserError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_since_is_a_date_a_time_or_an_age() -> None:
    assert since_of("12h", NOW) == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    assert since_of("30m", NOW) == datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
    assert since_of("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert since_of(None) is None
    with pytest.raises(UserError, match="--since"):
        since_of("yesterday")


def test_filters_are_parameters_not_sql() -> None:
    args = argparse.Namespace(patient="P1'; drop table x; --", study="1.2.3", user="rad",
                              session=None, since=None, limit=10**9)
    sql, params = access_query(args)
    assert "drop table" not in sql and params["patient"].startswith("P1'")
    assert params["limit"] == 100000 and params["actor"] == "user:rad"


def test_a_row_names_user_session_study_patient_and_outcome() -> None:
    row = trail_row((NOW, "phi.access_refused", "user:rad", "north", "ACC1", "1.2.3", None, {
        "user": "rad", "role": "radiologist", "session_id": "abc", "client_address": "10.0.0.9",
        "what": "study", "status": 404, "outcome": "refused", "reason": "STUDY_NOT_FOUND",
        "patient_ref": "P1^^^north", "count": 0}))
    assert (row["user"], row["session"], row["from"], row["study"], row["patient"],
            row["outcome"]) == ("rad", "abc", "10.0.0.9", "ACC1@north", "P1^^^north",
                                "refused 404 STUDY_NOT_FOUND")
    page = trail_row((NOW, "phi.accessed", "user:rad", "", "", "", None, {
        "what": "worklist", "studies": [{"patient_ref": "P1^^^n"}, {"patient_ref": "P2^^^n"}]}))
    assert (page["study"], page["patient"]) == ("2 studies", "P1^^^n, P2^^^n")
