"""DIMSE adapter: the C-ECHO / C-STORE SCP that hands every received object to the Receiver.

Associations: the calling AE title must be a registered facility's `ae_title`; otherwise the
request is rejected with A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title not
recognised") and an `association.rejected` audit event. Beyond `max_associations` concurrent
associations the request is rejected (rejected-transient, service-provider presentation, "local
limit exceeded"), also audited. Every storage SOP class pynetdicom knows is accepted with every
transfer syntax pydicom knows; the object is stored exactly as received (file meta + received
dataset bytes, never re-encoded). Sockets have TCP_NODELAY; the largest P-DATA PDU accepted is
`dicom_max_pdu_bytes`. On stop, idle associations are aborted at once and busy ones right after
their C-STORE response; an unanswered object is simply re-sent by the peer.

C-STORE response status (0x0000 is sent only once object and index row are durable):
  0x0000  stored; also for a duplicate (same facility/study/series/SOP instance already stored:
          nothing changes, `study.duplicate_seen` is audited; re-sending is not an error)
  0xA900  identity invalid: StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID / SOPClassUID
          missing, a UID breaking PS3.5 9.1, SOPInstanceUID differing from the request's
          AffectedSOPInstanceUID, AccessionNumber too long; ErrorComment + OffendingElement
  0xA700  out of resources: object larger than `max_object_mb` (OBJECT_TOO_LARGE; the excess is
          read and dropped, never buffered), database or disk failure, no durable result within
          `dicom_store_timeout_s`
  0xC000  cannot understand: not a DICOM dataset (NOT_DICOM: bytes without a single standard
          attribute) or any other rejection reason; ErrorComment carries the UPPER_SNAKE reason
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ingest_svc import dimse_status
from ingest_svc.dimse_codec import file_header
from ingest_svc.dimse_dul import Aborted, Association, Message, ProtocolError, supported_contexts
from ingest_svc.facilities import FacilityRef
from ingest_svc.receive import Outcome, Receiver
from ingest_svc.settings import IngestSettings
from sidecar_core import audit
from sidecar_core.audit import StudyRef

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.dimse"
UNKNOWN_CALLING_AE = "calling AE title not recognised"
C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030


class DimseServer:
    """Listens on `dicom_host:dicom_port`; each association is one task on `loop`."""

    def __init__(self, receiver: Receiver, settings: IngestSettings,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.receiver = receiver
        self.settings = settings
        self.loop = loop
        self.max_object_bytes = int(settings.max_object_mb * 1024 * 1024)
        self._supported = supported_contexts(
            [cx.abstract_syntax for cx in AllStoragePresentationContexts] + [Verification],
            list(AllTransferSyntaxes))
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: dict[asyncio.Task[None], bool] = {}  # association task -> busy
        self._stopping = False

    def start(self) -> None:
        """Binds now (errors surface here); serving starts once the loop runs again."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.settings.dicom_host, self.settings.dicom_port))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.loop.create_task(self._listen(sock))
        log.info("DICOM SCP %s listening on %s:%d", self.settings.dicom_ae_title,
                 self.settings.dicom_host, self.port)

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._on_connection, sock=sock,
                                                  limit=1 << 20)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock else 0

    def stop(self) -> None:
        """Stops accepting; idle associations are aborted now, busy ones after their reply."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        elif self._sock is not None:
            self._sock.close()
        for task, busy in list(self._tasks.items()):
            if not busy:
                task.cancel()

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = False
        assoc = Association(reader, writer, self.settings.dicom_max_pdu_bytes,
                            self.max_object_bytes, self.settings.dicom_network_timeout_s)
        try:
            facility = await self._negotiate(assoc)
            if facility is not None:
                await self._serve(assoc, task, facility)
        except ProtocolError as exc:
            log.warning("aborting association from %s: %s", assoc.peer, exc)
            await assoc.abort(0x02, exc.reason)
        except Aborted:
            await assoc.close()
        except asyncio.CancelledError:
            await assoc.abort(0x00, 0x00)  # shutting down
            raise
        except Exception:
            log.exception("association from %s failed", assoc.peer)
            await assoc.abort(0x02, 0x00)
        finally:
            self._tasks.pop(task, None)

    async def _negotiate(self, assoc: Association) -> FacilityRef | None:
        rq = await assoc.read_request()
        calling = rq.calling_ae_title.strip()
        if self._stopping or len(self._tasks) > self.settings.max_associations:
            await self._audit_rejection(assoc, "local limit exceeded")
            await assoc.reject(0x02, 0x03, 0x02)  # transient, presentation, local limit
            return None
        try:
            facility = await self.receiver.facilities.by_ae_title(calling)
        except Exception:
            log.exception("facility lookup failed; rejecting association from %s", calling)
            await assoc.reject(0x02, 0x01, 0x01)  # transient, service-user, no reason given
            return None
        if facility is None:
            log.warning("rejecting association: calling AE %r is not a registered facility",
                        calling)
            await self._audit_rejection(assoc, UNKNOWN_CALLING_AE)  # durable before the reply
            await assoc.reject(0x01, 0x01, 0x03)  # permanent, service-user, calling AE
            return None
        await assoc.accept(self._supported)
        return facility

    async def _serve(self, assoc: Association, task: asyncio.Task[None],
                     facility: FacilityRef) -> None:
        async for message in assoc.messages():
            self._tasks[task] = True
            try:
                status = await self._handle(assoc, message, facility)
                await assoc.respond(message, status)
            finally:
                self._tasks[task] = False
            if self._stopping:
                await assoc.abort(0x00, 0x00)
                return

    async def _handle(self, assoc: Association, message: Message,
                      facility: FacilityRef) -> int | Dataset:
        command = message.command.command_field
        if command == C_ECHO_RQ:
            return 0x0000
        if command != C_STORE_RQ:
            raise ProtocolError(f"DIMSE command 0x{command:04X} is not offered", 0x00)
        if message.dataset is None:
            return await self._too_large(facility, message)
        rq = message.command
        data = file_header(rq.affected_sop_class_uid, rq.affected_sop_instance_uid,
                           str(message.context.transfer_syntax[0])) + message.dataset
        calling = assoc.request.calling_ae_title.strip() if assoc.request else ""
        source_ref = f"{calling}@{assoc.peer}#{rq.message_id}"
        work = asyncio.ensure_future(self.receiver.receive(
            facility.name, data, "dimse", source_ref, facility=facility))
        try:
            # shielded: on timeout it may still become durable; a re-send is then a duplicate
            result = await asyncio.wait_for(asyncio.shield(work),
                                            self.settings.dicom_store_timeout_s)
        except Exception as exc:
            log.error("C-STORE from %s not stored: %r", source_ref, exc)
            return dimse_status.failure_status(exc)
        if result.outcome is Outcome.REJECTED:
            return dimse_status.rejected_status(result, message.dataset)
        return dimse_status.store_status(result)

    async def _too_large(self, facility: FacilityRef, message: Message) -> Dataset:
        text = (f"object is over {message.dataset_size} bytes; the limit is "
                f"{self.max_object_bytes} bytes")
        try:
            async with self.receiver.db.unit_of_work() as session:
                await audit.record(
                    session, self.receiver.topology, "study.receive_failed", ACTOR,
                    StudyRef(facility.name), error_class="OBJECT_TOO_LARGE", error_message=text,
                    context={"reason": "OBJECT_TOO_LARGE", "source": "dimse",
                             "sop_instance_uid": message.command.affected_sop_instance_uid})
        except Exception:
            log.exception("could not audit a refused object")
        return dimse_status.status_dataset(dimse_status.OUT_OF_RESOURCES,
                                           f"OBJECT_TOO_LARGE: {text}")

    async def _audit_rejection(self, assoc: Association, reason: str) -> None:
        rq = assoc.request
        context: dict[str, Any] = {
            "calling_ae": rq.calling_ae_title.strip()[:16] if rq else "",
            "called_ae": rq.called_ae_title.strip()[:16] if rq else "",
            "peer": assoc.peer, "reason": reason}
        try:
            async with self.receiver.db.unit_of_work() as session:
                await audit.record(session, self.receiver.topology, "association.rejected",
                                   ACTOR, error_class="ASSOCIATION_REJECTED",
                                   error_message=reason, context=context)
        except Exception:
            log.exception("could not audit an association rejection")
