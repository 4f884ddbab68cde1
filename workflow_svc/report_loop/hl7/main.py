"""The HL7 listener process of `sidecar up`: ORU^R01 over MLLP into the workflow store."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import ssl
from pathlib import Path

from pydantic import Field, model_validator

from sidecar_core import audit, service
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.observability import metrics
from sidecar_core.observability.metrics import StageClock
from sidecar_core.secret_box import SecretBox
from sidecar_core.security.edge_tls import EdgeConfigError, server_context
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals
from sidecar_core.settings import CommonSettings
from workflow_svc.report_loop.hl7 import intake as hl7_intake
from workflow_svc.report_loop.hl7.ack import Verdict, acks_for
from workflow_svc.report_loop.hl7.message import E_INTERNAL, Header, Hl7Error, decode, header_of
from workflow_svc.report_loop.hl7.mllp import (
    BurstReporter,
    MessageHandler,
    MllpLimits,
    MllpServer,
    OversizeHandler,
    RefusalBurst,
)

log = logging.getLogger(__name__)


ACTOR = "hl7_listener"
FD_RESERVE = 64  # files the process needs beside its MLLP connections (database, logs, ...)


class Hl7Settings(CommonSettings):
    hl7_host: str = "127.0.0.1"
    hl7_port: int = 2575
    hl7_tls_port: int = Field(default=2576, ge=0, le=65535, description="MLLP over TLS, "
                              "when a certificate is configured (no IANA port exists for it)")
    hl7_tls_cert: Path | None = Field(default=None, description="Certificate of the MLLP/TLS "
                                      "port (PEM); default: the HTTPS one (SIDECAR_HTTPS_CERT)")
    hl7_tls_key: Path | None = Field(default=None, description="The key of hl7_tls_cert")
    hl7_tls_client_ca: Path | None = Field(
        default=None, description="CA (PEM) whose client certificates the MLLP/TLS port "
        "requires of the RIS; unset: no client certificate asked for")
    https_cert: Path | None = None
    https_key: Path | None = None
    hl7_max_connections: int = Field(
        default=64, ge=1, le=10000, description="Concurrent MLLP connections, both ports "
        "together; beyond it the longest-idle connection is closed, or the new one if none is idle")
    hl7_idle_timeout: float = Field(
        default=60.0, gt=0, description="Seconds without a byte (or to finish a message or a "
        "TLS handshake begun) before an MLLP connection is closed")
    hl7_max_message_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest MLLP message taken; a larger one is "
        "read past and answered AR")

    @model_validator(mode="after")
    def _pairs(self) -> Hl7Settings:
        if (self.hl7_tls_cert is None) != (self.hl7_tls_key is None):
            raise EdgeConfigError("SIDECAR_HL7_TLS_CERT and SIDECAR_HL7_TLS_KEY go together: "
                                  "give both or neither")
        return self

    def tls_files(self) -> tuple[Path, Path] | None:
        """The MLLP/TLS certificate and key: the HL7 ones, else the HTTPS ones, else none."""
        if self.hl7_tls_cert is not None and self.hl7_tls_key is not None:
            return self.hl7_tls_cert, self.hl7_tls_key
        if self.https_cert is not None and self.https_key is not None:
            return self.https_cert, self.https_key
        return None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS 1.2+ (BCP 195) server context of the MLLP/TLS port, or None (no port)."""
        files = self.tls_files()
        if files is None:
            return None
        # the RIS must present a certificate the CA issued (no certificate, no handshake)
        return server_context(*files, self.hl7_tls_client_ca,
                              what="MLLP/TLS (SIDECAR_HL7_TLS_CERT, SIDECAR_HL7_TLS_CLIENT_CA)")

    def limits(self) -> MllpLimits:
        return MllpLimits(self.hl7_max_message_bytes, self.hl7_max_connections,
                          self.hl7_idle_timeout)


def make_handler(db: Database, topology: Topology,
                 box: SecretBox | None = None) -> MessageHandler:
    """bytes in, ACK messages out; a store failure is AE 207 so the sender keeps the message."""

    async def handle(message: bytes, peer: str) -> list[bytes]:
        clock = StageClock(metrics.HL7_STAGE_SECONDS)
        try:
            header, verdict = await hl7_intake.receive(db, topology, message, "mllp", peer,
                                                         box, clock)
        except Exception as exc:
            log.exception("HL7 message from %s not stored", peer)
            header = _safe_header(message)
            verdict = hl7_intake.internal_error(exc)
        acks = acks_for(header, verdict)
        clock.lap("ack")
        return acks

    return handle


def oversize_handler(db: Database, topology: Topology) -> OversizeHandler:
    """A message over the size limit: AR (do not send it again) naming the limit, and an audit
    event; the message itself was never buffered, so only its header is known."""

    async def too_large(head: bytes, size: int, peer: str) -> list[bytes]:
        header = _safe_header(head.split(b"\r", 1)[0] + b"\r")
        text = (f"message of {size} bytes or more refused: the limit is "
                f"SIDECAR_HL7_MAX_MESSAGE_BYTES")
        error = Hl7Error("AR", "MSH", 1, 0, E_INTERNAL, text)
        try:
            async with db.unit_of_work() as s:
                await audit.record(s, topology, "hl7.message_too_large", ACTOR,
                                   error_class="HL7_MESSAGE_TOO_LARGE", error_message=text,
                                   context={"bytes": size, "peer": peer,
                                            "control_id": header.control_id,
                                            "sending_facility": header.sending_facility})
        except Exception:
            log.exception("audit of an oversized HL7 message from %s failed", peer)
        return acks_for(header, Verdict("AR", text, error, committed=False))

    return too_large


def burst_reporter(db: Database, topology: Topology, cap: int) -> BurstReporter:
    """One audit event per burst of connections turned away by the connection cap, and one per
    burst of failed TLS handshakes (who knocked, how often, why)."""

    async def report(burst: RefusalBurst) -> None:
        peers = sorted(burst.peers)
        async with db.unit_of_work() as s:
            if burst.refused or burst.evicted:
                await audit.record(
                    s, topology, "hl7.connections_refused", ACTOR,
                    error_class="HL7_CONNECTION_CAP",
                    error_message=f"{burst.refused} MLLP connections turned away and "
                    f"{burst.evicted} idle ones closed at the cap of {cap} "
                    "(SIDECAR_HL7_MAX_CONNECTIONS)",
                    context={"refused": burst.refused, "evicted": burst.evicted,
                             "peers": peers, "max_connections": cap})
            if burst.tls_failed:
                await audit.record(
                    s, topology, "hl7.tls_handshake_failed", ACTOR,
                    error_class="HL7_TLS_HANDSHAKE",
                    error_message=f"{burst.tls_failed} MLLP/TLS handshakes failed: "
                    + "; ".join(burst.tls_errors),
                    context={"failed": burst.tls_failed, "peers": peers,
                             "reasons": burst.tls_errors})

    return report


def raise_open_files_limit(needed: int) -> int:
    """The soft open-files limit raised to the hard one (the cap's connections must fit: beyond
    the cap a connection is accepted and closed, never left to fail with EMFILE); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"hl7 listener: error: SIDECAR_HL7_MAX_CONNECTIONS needs {needed} open "
                         f"files and the limit is {soft} (ulimit -n): lower it")
    return int(soft)


def _safe_header(message: bytes) -> Header:
    try:
        return header_of(decode(message))
    except Exception:
        return Header()


async def run(settings: Hl7Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    try:
        tls = settings.tls_context()
    except EdgeConfigError as exc:
        raise SystemExit(f"hl7 listener: error: {exc}") from None
    raise_open_files_limit(settings.hl7_max_connections + FD_RESERVE)
    # no ping before each message: intake.receive retries one that meets a dropped connection
    db = Database(settings.database_url, pre_ping=False)
    topology = settings.topology()
    handler = make_handler(db, topology, settings.secret_box())
    server = MllpServer(handler, settings.hl7_host, settings.hl7_port,
                        limits=settings.limits(), tls=tls, tls_port=settings.hl7_tls_port,
                        oversize=oversize_handler(db, topology),
                        on_burst=burst_reporter(db, topology, settings.hl7_max_connections))
    await server.start()
    ready = Path(settings.data_dir) / "run" / "hl7.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(str(os.getpid()))
    await run_until_stopped("hl7_listener", stop,
                            closers=[lambda: ready.unlink(missing_ok=True), server.stop,
                                     db.close])


def main() -> None:
    service.main(run, Hl7Settings())


if __name__ == "__main__":
    main()
