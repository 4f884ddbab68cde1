"""Prometheus metrics of every service, named once here; each process serves its own registry.

Services with a gRPC port serve them over HTTP on their metrics port (`SIDECAR_METRICS_PORT`,
set per process by `sidecar up`); the gateway serves its own at `GET /metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

INGEST_INSTANCES = Counter(
    "sidecar_ingest_instances", "DICOM instances received, by facility, adapter and outcome",
    ["facility", "source", "outcome"])
INGEST_REJECTIONS = Counter(
    "sidecar_ingest_rejections", "Instances refused, by reason (e.g. INVALID_UID, "
    "STORAGE_FAILED, UNKNOWN_FACILITY)", ["facility", "source", "reason"])
JOBS_FAILED = Counter(
    "sidecar_jobs_failed", "Jobs and events that exhausted their deliveries or failed for good "
    "(dead-lettered), by consumer and subject", ["consumer", "kind"])
REDELIVERIES = Counter(
    "sidecar_consumer_redeliveries", "Messages delivered again after a failure or an ack "
    "timeout, by consumer", ["consumer"])
INFERENCE_SECONDS = Histogram(
    "sidecar_inference_seconds", "Triton inference time of one AI run, by model",
    ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
PREPROCESS_SECONDS = Histogram(
    "sidecar_preprocess_seconds", "Preprocess worker time per series, by stage: model_input "
    "(take decoded instances, read and decode the rest, serialise), store (object and rows), "
    "sync (the model input made durable, beside inference), display (thumbnail, preview)",
    ["stage"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
EARLY_DECODE = Counter(
    "sidecar_early_decode_instances", "Instances of the early decode (decode on arrival), by "
    "outcome: decoded (on arrival), hit (the job took it decoded), miss (the job read it)",
    ["outcome"])
AI_RUNS = Counter("sidecar_ai_runs", "AI runs finished, by model and status",
                  ["model", "status"])
ELIGIBILITY = Counter(
    "sidecar_eligibility_decisions", "Eligibility decisions, by facility and outcome "
    "(eligible, ineligible)", ["facility", "outcome"])
ERRORS = Counter(
    "sidecar_errors", "Audit events carrying an error, by facility and event type",
    ["facility", "type"])
RECEIVED_TO_AI_READY = Histogram(
    "sidecar_study_received_to_ai_ready_seconds",
    "SLO: from a study's completion (received) to ready_for_review with its AI results",
    ["facility"], buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
HTTP_REQUESTS = Counter(
    "sidecar_gateway_requests", "Gateway HTTP requests, by route template, method and status",
    ["route", "method", "status"])
HL7_CONNECTIONS = Gauge("sidecar_hl7_connections",
                        "MLLP connections open on the HL7 listener (both ports)")
HL7_REFUSALS = Counter(
    "sidecar_hl7_refusals", "MLLP connections and messages the HL7 listener's bounds turned "
    "away, by reason (over_cap, evicted, idle_timeout, tls_handshake, "
    "message_too_large)", ["reason"])
HL7_STAGE_SECONDS = Histogram(
    "sidecar_hl7_stage_seconds", "HL7 listener time per message, by stage: parse, connect "
    "(pool checkout), read (earlier copy and facility), lock (the report's studies), write "
    "(every row and event in one statement), commit (audit chain and WAL flush), ack (the "
    "ACK messages built)", ["stage"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
INGEST_STAGE_SECONDS = Histogram(
    "sidecar_ingest_stage_seconds", "DIMSE C-STORE time per object, by stage: read (waiting "
    "for and reading the request's PDUs, the sender's time included), join (the object's "
    "bytes), parse, append (pack segment write and data sync), index (the index statement and "
    "its commit), respond", ["stage"],
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1))
QUEUE_POLL_ERRORS = Gauge("sidecar_queue_poll_failed",
                          "1 when the last poll of the consumers' state failed")


class StageClock:
    """Laps of one unit of work into a histogram labelled by stage: `lap(stage)` observes the
    time since the previous lap (or the clock's start)."""

    __slots__ = ("histogram", "t")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.histogram.labels(stage).observe(now - self.t)
        self.t = now


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serves this process's metrics on http://host:port/metrics (a daemon thread)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)


class ConsumerStates(Collector):
    """Queue depth, pending acks and redelivered counts per durable consumer, as last polled."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int, int]] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily("sidecar_queue_depth",
                                  "Messages waiting for a consumer", labels=["consumer"])
        pending = GaugeMetricFamily("sidecar_queue_ack_pending",
                                    "Messages delivered, not yet acknowledged",
                                    labels=["consumer"])
        redelivered = GaugeMetricFamily("sidecar_queue_redelivered",
                                        "Messages now out for redelivery", labels=["consumer"])
        for name, waiting, ack_pending, again in self.rows:
            depth.add_metric([name], waiting)
            pending.add_metric([name], ack_pending)
            redelivered.add_metric([name], again)
        yield from (depth, pending, redelivered)


CONSUMERS = ConsumerStates()
REGISTRY.register(CONSUMERS)


class AuditChainHeads(Collector):
    """The head of each audit hash chain, as last read: an outside system that records these
    (hash, position) pairs can later prove the audit up to them unchanged (docs/audit.md)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, str]] = []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        head = GaugeMetricFamily(
            "sidecar_audit_chain_head", "Position (events so far) of each audit chain's last "
            "event; the label hash is that event's SHA-256 chain hash", labels=["chain", "hash"])
        for chain, pos, digest in self.rows:
            head.add_metric([str(chain), digest], pos)
        yield head


AUDIT_CHAIN_HEADS = AuditChainHeads()
REGISTRY.register(AUDIT_CHAIN_HEADS)


async def poll_consumers(js: object, streams: Iterable[str], stop: asyncio.Event,
                         interval_s: float = 5.0) -> None:
    """Keeps CONSUMERS current from JetStream's info on every durable of `streams`."""
    names = list(streams)
    while not stop.is_set():
        rows = []
        try:
            for stream in names:
                for info in await js.consumers_info(stream):  # type: ignore[attr-defined]
                    rows.append((info.name, int(info.num_pending or 0),
                                 int(info.num_ack_pending or 0),
                                 int(info.num_redelivered or 0)))
            CONSUMERS.rows = rows
            QUEUE_POLL_ERRORS.set(0)
        except Exception:
            QUEUE_POLL_ERRORS.set(1)
            log.debug("consumer poll failed", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
AUDIT_SYSLOG_BACKLOG = Gauge("sidecar_audit_syslog_backlog",
                             "Audit events not yet delivered to the ATNA syslog repository")
AUDIT_SYSLOG_SENT = Counter("sidecar_audit_syslog_sent",
                            "Audit events delivered to the ATNA syslog repository")
AUDIT_SYSLOG_FAILURES = Counter("sidecar_audit_syslog_failures",
                                "Failed attempts to deliver audit events to the ATNA repository")

# Retention and purge (workflow_svc/operations/retention.py), set by the process that runs them
STORAGE_BYTES = Gauge("sidecar_storage_bytes", "Bytes of the DICOM objects (received and "
                      "derived) indexed per facility, as of the last retention pass",
                      ["facility"])
RETENTION_DELETED = Counter("sidecar_retention_deleted_objects", "Objects deleted by retention "
                            "or purge, by facility and reason (retention, purge)",
                            ["facility", "reason"])
RETENTION_DELETED_BYTES = Counter("sidecar_retention_deleted_bytes", "Bytes of the objects "
                                  "deleted by retention or purge", ["facility", "reason"])
