"""A storage failure's message stays one line, so a one-line report keeps its advice."""

from __future__ import annotations

import psycopg

from ingest_svc.study.receive import storage_failure


def test_a_multi_line_libpq_error_becomes_one_line_that_ends_with_the_advice() -> None:
    exc = psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request.")
    failure = storage_failure(exc)
    assert failure.reason == "STORAGE_FAILED"
    assert "\n" not in failure.message
    assert failure.message.splitlines()[0].endswith("send it again later")
    assert "server terminated abnormally before or while processing" in failure.message
    assert failure.short == "index unavailable: OperationalError"


def test_a_disk_error_names_the_object_store() -> None:
    failure = storage_failure(OSError(28, "No space left on device"))
    assert failure.short == "object store: No space left on device"
    assert failure.message.endswith("send it again later")
