"""uvicorn's access log never shows a query string (a ?token= or a patient name)."""

from __future__ import annotations

import logging

from review_gateway.web.access_log import DropQueryString


def test_query_string_is_dropped() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/dicomweb/studies?token=abc.def&x=1",
                                "1.1", 200), None)
    assert DropQueryString().filter(record)
    assert "abc.def" not in record.getMessage()
    assert '"GET /dicomweb/studies?… HTTP/1.1" 200' in record.getMessage()
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s %s %s %s %d",
                              ("c", "GET", "/healthz", "1.1", 200), None)
    assert DropQueryString().filter(plain) and "/healthz" in plain.getMessage()
