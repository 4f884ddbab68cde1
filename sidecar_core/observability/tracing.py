"""OpenTelemetry traces: gRPC calls, bus messages (W3C trace context in NATS headers, kept
in the outbox row until the relay publishes it) and the gateway's requests, exported over
OTLP/HTTP when an endpoint is configured (`SIDECAR_OTLP_ENDPOINT` or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`). Without one, nothing is recorded and nothing is sent."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
_provider: object | None = None


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
        OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"),
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
