"""OpenTelemetry traces: gRPC calls, bus messages (W3C trace context in NATS headers, kept
in the outbox row until the relay publishes it) and the gateway's requests, exported over
OTLP/HTTP when an endpoint is configured (`SIDECAR_OTLP_ENDPOINT` or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`). Without one, nothing is recorded and nothing is sent."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import parse_qsl

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
_provider: object | None = None


# Span attributes that hold a URL, a request target or a query string: their query is reduced
# to its keys' names, so no `?token=`, hand-over `code` or QIDO search value (PatientName,
# PatientID, ...) is ever exported.
URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.query")


def names_only(query: str) -> str:
    """`a=1&PatientName=DOE&token=x` → `PatientName&a&token` (sorted names, no values)."""
    return "&".join(sorted({k for k, _ in parse_qsl(query, keep_blank_values=True)}))


def scrub(key: str, value: str) -> str:
    """An attribute value of `URL_ATTRIBUTES` without the values of its query."""
    if key == "url.query":
        return names_only(value)
    base, sep, query = value.partition("?")
    if not sep:
        return value
    names = names_only(query.split("#", 1)[0])
    return f"{base}?{names}" if names else base


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """`span` itself, or a copy whose URL attributes keep their query's key names only (the
    HTTP instrumentations set them more than once, so this runs on the finished span)."""
    attributes = dict(span.attributes or {})
    changed = False
    for key in URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and scrub(key, value) != value:
            attributes[key] = scrub(key, value)
            changed = True
    if not changed:
        return span
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=attributes, events=span.events, links=span.links, kind=span.kind,
        status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope)


class ScrubbingExporter(SpanExporter):
    """Exports through `inner` the spans as `scrubbed` makes them."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrubbed(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def setup(service: str, endpoint: str) -> bool:
    """Installs the tracer provider and the gRPC instrumentation; False when `endpoint` is
    empty (tracing off). Call before any gRPC server or channel is created."""
    global _provider
    if not endpoint or _provider is not None:
        return _provider is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(
        ScrubbingExporter(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")),
        schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    _provider = provider
    log.info("traces exported to %s", endpoint)
    return True


def shutdown() -> None:
    """Flushes what is buffered (at process exit)."""
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()  # type: ignore[attr-defined]


def current_traceparent() -> str:
    """The active span's W3C traceparent, or '' (tracing off or no active span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


@contextlib.contextmanager
def consuming(subject: str, headers: Mapping[str, str] | None, msg_id: str) -> Iterator[None]:
    """A CONSUMER span for one bus message, a child of the span that published it."""
    parent = propagate.extract(dict(headers or {}))
    token = otel_context.attach(parent)
    try:
        with trace.get_tracer("sidecar.bus").start_as_current_span(
                f"consume {subject}", kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                            "messaging.message.id": msg_id}):
            yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def span(name: str, **attributes: str) -> Iterator[None]:
    with trace.get_tracer("sidecar").start_as_current_span(name, attributes=attributes):
        yield
