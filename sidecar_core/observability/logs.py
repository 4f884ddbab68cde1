"""Log records as one JSON object a line, carrying the job, study and trace they belong to.

What a handler is working on is kept in context variables (`bind`), so every line logged
while it runs names the same job id, study id and facility without repeating them. Only
identifiers go in: no patient names, no accession numbers, no free text from DICOM headers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "log_context", default=None)
FIELDS = ("job_id", "study_id", "facility", "subject", "attempt", "trace_id")


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Adds `fields` (a subset of FIELDS) to every record logged inside the block."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **{k: str(v) for k, v in fields.items()
                                                if v not in (None, "") and k in FIELDS}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current() -> dict[str, str]:
    return dict(_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "service": self.service, "logger": record.name,
            "message": record.getMessage(), **(_CONTEXT.get() or {})}
        trace_id = _trace_id()
        if trace_id:
            entry.setdefault("trace_id", trace_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _trace_id() -> str:
    """The current OpenTelemetry trace id when tracing is active."""
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def configure(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Root logging for a service process: JSON lines (default) or plain text."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
