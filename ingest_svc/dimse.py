"""DIMSE adapter: a pynetdicom C-ECHO / C-STORE SCP that hands every object to the Receiver.

Associations: the calling AE title must be a registered facility's `ae_title`; otherwise the
request is rejected with A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title not
recognised") and an `association.rejected` audit event. Beyond `max_associations` concurrent
associations pynetdicom rejects with (rejected-transient, service-provider presentation,
"local limit exceeded"), also audited. Every storage SOP class pynetdicom knows is accepted with
every transfer syntax pydicom knows; the object is stored exactly as received (file meta +
received dataset bytes, never re-encoded).

C-STORE response status (0x0000 is sent only once object and index row are durable):
  0x0000  stored; also for a duplicate (same facility/study/series/SOP instance already stored:
          nothing changes, `study.duplicate_seen` is audited; re-sending is not an error)
  0xA900  identity invalid: StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID / SOPClassUID
          missing, a UID breaking PS3.5 9.1, SOPInstanceUID differing from the request's
          AffectedSOPInstanceUID, AccessionNumber too long; ErrorComment + OffendingElement
  0xA700  out of resources: object larger than `max_object_mb` (OBJECT_TOO_LARGE), database or
          disk failure, no durable result within `dicom_store_timeout_s`, shutting down
  0xC000  cannot understand: not a DICOM dataset (NOT_DICOM: bytes without a single standard
          attribute) or any other rejection reason; ErrorComment carries the UPPER_SNAKE reason
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import weakref
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from ingest_svc import dimse_status
from ingest_svc.facilities import FacilityRef
from ingest_svc.receive import Outcome, Receiver
from ingest_svc.settings import IngestSettings
from sidecar_core import audit

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.dimse"
UNKNOWN_CALLING_AE = "calling AE title not recognised"
_LOOKUP_TIMEOUT_S = 10.0
# (source, diagnostic) of an A-ASSOCIATE-RJ pynetdicom sends by itself -> audited reason
_REJECT_REASONS = {
    (0x01, 0x03): UNKNOWN_CALLING_AE,
    (0x01, 0x07): "called AE title not recognised",
    (0x02, 0x01): "no reason given",
    (0x03, 0x01): "temporary congestion",
    (0x03, 0x02): "local limit exceeded",
}


def _nodelay(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # not a TCP socket
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reject(assoc: Association, result: int, source: int, diagnostic: int) -> None:
    """Sends A-ASSOCIATE-RJ and waits until the DUL has written it: pynetdicom closes the
    socket as soon as the EVT_REQUESTED handler returns, which could otherwise beat the PDU."""
    assoc.acse.send_reject(result, source, diagnostic)
    deadline = time.monotonic() + 2.0
    while assoc.dul.state_machine.current_state == "Sta3" and time.monotonic() < deadline:
        time.sleep(0.001)


class DimseServer:
    """The C-STORE SCP; handlers run in pynetdicom threads and bridge to the asyncio `loop`."""

    def __init__(self, receiver: Receiver, settings: IngestSettings,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.receiver = receiver
        self.settings = settings
        self.loop = loop
        self._facilities: weakref.WeakKeyDictionary[Association, FacilityRef] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._stopping = False
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.dicom_ae_title)
        ae.maximum_associations = self.settings.max_associations
        ae.maximum_pdu_size = self.settings.dicom_max_pdu_bytes
        ae.network_timeout = self.settings.dicom_network_timeout_s
        syntaxes = list(AllTransferSyntaxes)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification, syntaxes)
        return ae

    def start(self) -> None:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self._ae = self._build_ae()
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._server = self._ae.start_server(
            (self.settings.dicom_host, self.settings.dicom_port), block=False,
            evt_handlers=handlers)
        _nodelay(self._server.socket)
        log.info("DICOM SCP %s listening on %s:%d", self.settings.dicom_ae_title,
                 self.settings.dicom_host, self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        """Stops accepting, aborts open associations; unacknowledged objects are re-sent."""
        self._stopping = True
        if self._ae is not None:
            self._ae.shutdown()
        self._ae = self._server = None

    # -- handlers (pynetdicom threads) --------------------------------------------------------

    def _on_conn_open(self, event: evt.Event) -> None:
        _nodelay(getattr(event.assoc.dul.socket, "socket", None))

    def _call(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        try:
            facility = self._call(self.receiver.facilities.by_ae_title(calling),
                                  _LOOKUP_TIMEOUT_S)
        except Exception:
            log.exception("facility lookup failed; rejecting association from %s", calling)
            _reject(assoc, 0x02, 0x01, 0x01)  # transient, service-user, no reason given
            return
        if facility is None:
            log.warning("rejecting association: calling AE %r is not a registered facility",
                        calling)
            self._audit_rejection(event, UNKNOWN_CALLING_AE)  # durable before the peer knows
            _reject(assoc, 0x01, 0x01, 0x03)  # permanent, service-user, calling AE title
            return
        with self._lock:
            self._facilities[assoc] = facility

    def _on_rejected(self, event: evt.Event) -> None:
        rj = event.assoc.acceptor.primitive
        key = (rj.result_source, rj.diagnostic) if rj is not None else None
        self._audit_rejection(event, _REJECT_REASONS.get(key, "rejected"))

    def _audit_rejection(self, event: evt.Event, reason: str) -> None:
        rq = event.assoc.requestor
        context = {"calling_ae": rq.primitive.calling_ae_title.strip()[:16],
                   "called_ae": rq.primitive.called_ae_title.strip()[:16],
                   "peer": f"{rq.address}:{rq.port}", "reason": reason}
        try:
            self._call(self._record("association.rejected", context), _LOOKUP_TIMEOUT_S)
        except Exception:
            log.exception("could not audit an association rejection")

    async def _record(self, event_type: str, context: dict[str, Any]) -> None:
        async with self.receiver.db.unit_of_work() as session:
            await audit.record(session, self.receiver.topology, event_type, ACTOR,
                               error_class="ASSOCIATION_REJECTED",
                               error_message=str(context.get("reason", "")), context=context)

    def _on_echo(self, event: evt.Event) -> int:
        return 0x0000

    def _on_store(self, event: evt.Event) -> Any:
        with self._lock:
            facility = self._facilities.get(event.assoc)
        if facility is None:  # cannot happen: the association would have been rejected
            return dimse_status.status_dataset(dimse_status.CANNOT_UNDERSTAND,
                                               "UNKNOWN_FACILITY: calling AE not registered")
        if self._stopping:
            return dimse_status.status_dataset(dimse_status.OUT_OF_RESOURCES,
                                               "OUT_OF_RESOURCES: shutting down; retry later")
        rq = event.assoc.requestor
        data = event.encoded_dataset(include_meta=True)
        calling = rq.primitive.calling_ae_title.strip()
        source_ref = f"{calling}@{rq.address}#{event.request.MessageID}"
        coro = self.receiver.receive(facility.name, data, "dimse", source_ref, facility=facility)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            result = future.result(self.settings.dicom_store_timeout_s)
        except FutureTimeout as exc:
            # Not cancelled: it may still become durable; a re-send then is a duplicate.
            log.error("C-STORE not durable within %.0fs", self.settings.dicom_store_timeout_s)
            return dimse_status.failure_status(exc)
        except Exception as exc:
            log.exception("C-STORE failed")
            return dimse_status.failure_status(exc)
        if result.outcome is Outcome.REJECTED:
            return dimse_status.rejected_status(result, data)
        return dimse_status.store_status(result)
