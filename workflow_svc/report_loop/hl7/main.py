"""The HL7 listener process of `sidecar up`: ORU^R01 over MLLP into the workflow store."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from sidecar_core import service
from sidecar_core.db import Database
from sidecar_core.messaging.subjects import Topology
from sidecar_core.service import run_until_stopped
from sidecar_core.serving.grpc_server import stop_event_on_signals
from sidecar_core.settings import CommonSettings
from workflow_svc.report_loop.hl7 import intake as hl7_intake
from workflow_svc.report_loop.hl7.ack import acks_for
from workflow_svc.report_loop.hl7.message import Header, decode, header_of
from workflow_svc.report_loop.hl7.mllp import MessageHandler, MllpServer

log = logging.getLogger(__name__)


class Hl7Settings(CommonSettings):
    hl7_host: str = "127.0.0.1"
    hl7_port: int = 2575
    hl7_max_message_mb: float = 16.0


def make_handler(db: Database, topology: Topology) -> MessageHandler:
    """bytes in, ACK messages out; a store failure is AE 207 so the sender keeps the message."""

    async def handle(message: bytes, peer: str) -> list[bytes]:
        try:
            header, verdict = await hl7_intake.receive(db, topology, message, "mllp", peer)
        except Exception as exc:
            log.exception("HL7 message from %s not stored", peer)
            header = _safe_header(message)
            verdict = hl7_intake.internal_error(exc)
        return acks_for(header, verdict)

    return handle


def _safe_header(message: bytes) -> Header:
    try:
        return header_of(decode(message))
    except Exception:
        return Header()


async def run(settings: Hl7Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or stop_event_on_signals()
    db = Database(settings.database_url)
    server = MllpServer(make_handler(db, settings.topology()), settings.hl7_host,
                        settings.hl7_port, int(settings.hl7_max_message_mb * 1024 * 1024))
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
