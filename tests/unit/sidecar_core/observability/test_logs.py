"""JSON log lines carry the job and study they belong to, and only what was bound."""

from __future__ import annotations

import io
import json
import logging

from sidecar_core.observability import logs


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("ingest_svc"))
    logger = logging.getLogger("test.logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_bound_fields_appear_on_every_line_inside_the_block_only() -> None:
    logger, stream = _capture()
    with logs.bind(job_id="ai_run:1234", study_id="5d1c", attempt=2, patient_name="DOE^JANE"):
        logger.info("started")
        with logs.bind(facility="north"):
            logger.warning("retry")
    logger.info("idle")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "started" and first["service"] == "ingest_svc"
    assert first["job_id"] == "ai_run:1234" and first["attempt"] == "2"
    assert "patient_name" not in first  # only the named identifier fields are ever bound
    assert second["facility"] == "north" and second["level"] == "WARNING"
    assert "job_id" not in third and "facility" not in third


def test_exceptions_are_kept_in_one_line() -> None:
    logger, stream = _capture()
    try:
        raise ValueError("bad header")
    except ValueError:
        logger.exception("failed")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert "ValueError: bad header" in entry["exception"]
