"""The one AI-run status: its terminal set, the outcomes a finished run reports, and the strings
the store and the bus carry."""

from __future__ import annotations

import pytest

from protos.sidecar.events.v1 import events_pb2
from sidecar_core.ai_run_status import TERMINAL, AiRunStatus, is_terminal, outcome
from sidecar_core.store.models import AiRun


def test_the_terminal_set() -> None:
    assert {s.value for s in TERMINAL} == {"completed", "failed", "invalid", "redriven"}
    assert not is_terminal("queued") and not is_terminal("running")
    # what the database hands back is a plain string
    assert all(is_terminal(str(s.value)) for s in TERMINAL)
    assert not is_terminal("") and not is_terminal("COMPLETED")


def test_a_finished_run_reports_an_outcome_never_a_redrive() -> None:
    assert outcome("completed") is AiRunStatus.COMPLETED
    assert outcome("failed") is AiRunStatus.FAILED
    assert outcome("invalid") is AiRunStatus.INVALID
    for value in ("redriven", "queued", "running", "", "done"):
        with pytest.raises(ValueError, match="not an AI run outcome"):
            outcome(value)


def test_the_values_are_the_stored_and_carried_strings() -> None:
    assert [s.value for s in AiRunStatus] == [
        "queued", "running", "completed", "failed", "invalid", "redriven"]
    column = AiRun.__table__.c.status
    assert column.default is not None and column.default.arg == AiRunStatus.QUEUED
    assert max(len(s.value) for s in AiRunStatus) <= column.type.length
    for status in AiRunStatus:
        carried = events_pb2.AiRunFinished(status=status.value).SerializeToString()
        assert AiRunStatus(events_pb2.AiRunFinished.FromString(carried).status) is status
