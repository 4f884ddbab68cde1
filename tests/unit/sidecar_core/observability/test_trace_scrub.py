"""Exported spans carry no token, hand-over code or QIDO search value: the gateway's request
spans (FastAPI instrumentation, as `review_gateway.main` installs it) sent over OTLP/HTTP to a
real receiver keep only the names of the query's keys."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sidecar_core.observability.tracing import scrub
from tests.otlp_receiver import OtlpReceiver

SECRETS = ("SECRETTOKEN", "ONETIMECODE", "DOE^JANE", "PID12345")

# A separate process: the tracer provider is global and set once.
SCRIPT = textwrap.dedent("""
    import sys
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from sidecar_core.observability import tracing

    assert tracing.setup("gateway-scrub-test", sys.argv[1])
    app = FastAPI()

    @app.get("/dicomweb/studies")
    def studies() -> list[str]:
        return []

    FastAPIInstrumentor.instrument_app(app)
    with TestClient(app) as http:
        query = ("PatientName=DOE%5EJANE&00100020=PID12345&token=SECRETTOKEN"
                 "&code=ONETIMECODE&limit=5")
        assert http.get("/dicomweb/studies?" + query).status_code == 200
    tracing.shutdown()
""")


def test_scrub_keeps_the_query_keys_names_only() -> None:
    assert scrub("http.target", "/dicomweb/studies?PatientName=DOE&token=x") == \
        "/dicomweb/studies?PatientName&token"
    assert scrub("http.url", "https://h/v?code=abc#frag") == "https://h/v?code"
    assert scrub("url.query", "PatientID=1&limit=2") == "PatientID&limit"
    assert scrub("http.target", "/healthz") == "/healthz"
    assert scrub("http.url", "http://h/x?") == "http://h/x"


def test_exported_gateway_spans_carry_no_token_code_or_search_value() -> None:
    with OtlpReceiver() as receiver:
        done = subprocess.run([sys.executable, "-c", SCRIPT, receiver.endpoint],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        spans = [s for s in receiver.spans if s.service == "gateway-scrub-test"]
    assert spans, "no span reached the receiver"
    exported = repr([(s.name, s.attributes) for s in spans])
    for secret in SECRETS:
        assert secret not in exported, exported
    targets = [v for s in spans for k, v in s.attributes.items()
               if k in ("http.target", "http.url", "url.full", "url.query")]
    assert targets, exported  # the URL attributes are there, reduced to the keys' names
    assert any("00100020&PatientName&code&limit&token" in t for t in targets), targets
