"""DIMSE adapter: the C-ECHO / C-STORE SCP that hands every received object to the Receiver.

Associations: the calling AE title must be a registered facility's `ae_title`; otherwise the
request is rejected with A-ASSOCIATE-RJ (rejected-permanent, service-user, "calling AE title not
recognised") and an `association.rejected` audit event. Beyond `max_associations` concurrent
associations the request is rejected (rejected-transient, service-provider presentation, "local
limit exceeded"), also audited.

DICOM TLS (PS3.15 Annex B): with a certificate (DicomTlsSettings), the same SCP also listens on
`dicom_tls_port`; a connection there is a TLS 1.2+ handshake (BCP 195 ciphers) before the first
PDU, with a client certificate asked for when SIDECAR_DICOM_TLS_CLIENT_CA is set. A failed
handshake (plaintext, a client certificate that does not verify, a timeout) closes the
connection and is audited as `association.rejected` ("TLS handshake failed: ..."). Per facility,
on both ports: a peer outside `dicom_allowed_hosts` is rejected (rejected-permanent,
service-user, "calling AE title not recognised"); a facility with `dicom_require_client_cert`
rejects an association without a verified client certificate (rejected-permanent, service-user,
"no reason given"); both audited as `association.rejected` with the peer address, the calling
AE and the reason. The audit of refusals is coalesced (ingest_svc.dimse.peers.Coalescer): a
flood from one address is a few rows, each counting the ones left out before it.

Every storage SOP class pynetdicom knows is accepted with every
transfer syntax pydicom knows; the object is stored exactly as received (file meta + received
dataset bytes, never re-encoded). Sockets have TCP_NODELAY; the largest P-DATA PDU accepted is
`dicom_max_pdu_bytes`. On stop, idle associations are aborted at once and busy ones right after
their C-STORE response; an unanswered object is simply re-sent by the peer.

Threads: an acceptor thread per port takes connections; each association is served by one thread
of a pool of `max_associations` threads (a connection over the limit is answered by a short-lived
thread of its own). The serving thread reads, stores (Receiver.receive_blocking: parse, pack
append, index call; a duplicate's or a reopening instance's audit event in the same thread) and
answers on its own, so a C-STORE crosses no thread boundary; the facility lookup and the audit
events of refusals run as coroutines on the service's event loop (they may need its spool).

C-STORE response status (0x0000 is sent only once object and index row are durable):
  0x0000  stored; also for a duplicate (same facility/study/series/SOP instance already stored:
          nothing changes, `study.duplicate_seen` is audited; re-sending is not an error)
  0xA900  identity invalid: StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID / SOPClassUID
          missing, a UID breaking PS3.5 9.1, SOPInstanceUID / SOPClassUID differing from the
          request's AffectedSOPInstanceUID / AffectedSOPClassUID (the data set does not match
          the SOP class it was sent as), AccessionNumber too long; ErrorComment +
          OffendingElement
  0xA700  out of resources: object larger than `max_object_mb` (OBJECT_TOO_LARGE; the excess is
          read and dropped, never buffered), database or disk failure, no durable result within
          `dicom_store_timeout_s`
  0xC000  cannot understand: not a DICOM dataset (NOT_DICOM: bytes without a single standard
          attribute) or any other rejection reason; ErrorComment carries the UPPER_SNAKE reason
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from ingest_svc.dimse import status as dimse_status
from ingest_svc.dimse.codec import file_header
from ingest_svc.dimse.dul import (
    ACSE_TIMEOUT_S,
    Aborted,
    Association,
    Message,
    ProtocolError,
    supported_contexts,
)
from ingest_svc.dimse.peers import Coalescer, check_peer
from ingest_svc.facilities import FacilityRef
from ingest_svc.settings import IngestSettings
from ingest_svc.study.receive import Outcome, Receiver
from sidecar_core.audit import StudyRef
from sidecar_core.audit_spool import record_or_spool
from sidecar_core.observability import metrics
from sidecar_core.observability.metrics import StageClock

log = logging.getLogger(__name__)
ACTOR = "ingest_svc.dimse"
UNKNOWN_CALLING_AE = "calling AE title not recognised"
C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
T = TypeVar("T")


class DimseServer:
    """Listens on `dicom_host:dicom_port`, and on `dicom_host:dicom_tls_port` with TLS where a
    certificate is configured; `loop` runs the service's coroutines (audit, DB)."""

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
        self._tls_sock: socket.socket | None = None
        self._tls = settings.scp_context() if settings.dicom_tls_port else None
        self._acceptors: list[threading.Thread] = []
        self._coalescer = Coalescer()
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.max_associations),
                                        thread_name_prefix="dimse")
        self._lock = threading.Lock()
        self._active: dict[Association, bool] = {}  # association -> busy
        self._refusers = threading.BoundedSemaphore(8)  # threads answering over-limit peers
        self._stopping = False
        # Called (on this association's thread) after a release with the studies it stored.
        self.on_released: Callable[[FacilityRef, set[str]], None] | None = None

    def start(self) -> None:
        """Binds now (errors surface here) and starts accepting."""
        self._sock = self._listen(self.settings.dicom_port)
        if self._tls is not None:
            self._tls_sock = self._listen(self.settings.dicom_tls_port)
        for sock, tls in ((self._sock, None), (self._tls_sock, self._tls)):
            if sock is None:
                continue
            acceptor = threading.Thread(target=self._accept_loop, args=(sock, tls),
                                        name="dimse-accept-tls" if tls else "dimse-accept",
                                        daemon=True)
            acceptor.start()
            self._acceptors.append(acceptor)
        self._pool.submit(self.receiver.warm_current_thread)  # the first association's thread
        log.info("DICOM SCP %s listening on %s:%d", self.settings.dicom_ae_title,
                 self.settings.dicom_host, self.port)
        if self._tls is not None:
            log.info("DICOM TLS SCP listening on %s:%d (client certificates %s)",
                     self.settings.dicom_host, self.tls_port,
                     "asked for" if self.settings.dicom_tls_client_ca else "not asked for")
        elif self.settings.dicom_tls_port:
            log.info("DICOM TLS port %d off: no certificate (SIDECAR_DICOM_TLS_CERT/_KEY or "
                     "SIDECAR_HTTPS_CERT/_KEY)", self.settings.dicom_tls_port)

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.settings.dicom_host, port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        return sock

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock else 0

    @property
    def tls_port(self) -> int:
        """The DICOM TLS port, 0 when it does not listen."""
        return int(self._tls_sock.getsockname()[1]) if self._tls_sock else 0

    async def stop(self, wait_s: float = 30.0) -> None:
        """Stops accepting; idle associations are aborted now, busy ones after their reply.

        Waits (off the loop: serving threads may need it for their audit events) until every
        association has ended."""
        self._stopping = True
        for sock in (self._sock, self._tls_sock):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the acceptor
                sock.close()
        with self._lock:
            idle = [a for a, busy in self._active.items() if not busy]
        for assoc in idle:
            assoc.abort(0x00, 0x00, from_other_thread=True)
        acceptors = list(self._acceptors)

        def join() -> None:
            for acceptor in acceptors:
                acceptor.join(5)
            self._pool.shutdown(wait=True, cancel_futures=True)

        await asyncio.wait_for(asyncio.to_thread(join), wait_s)

    def _accept_loop(self, listener: socket.socket, tls: ssl.SSLContext | None) -> None:
        while not self._stopping:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping:
                    return
                log.exception("accepting a DICOM connection failed")
                continue
            assoc = Association(conn, self.settings.dicom_max_pdu_bytes, self.max_object_bytes,
                                self.settings.dicom_network_timeout_s)
            with self._lock:
                over = len(self._active) >= self.settings.max_associations
                if not over:
                    self._active[assoc] = False
            if over and not self._refusers.acquire(blocking=False):
                assoc.close()  # a flood of connections: no thread to spare for a reply
            elif over:  # answered by a thread of its own: the pool is full
                threading.Thread(target=self._refuse, args=(assoc, tls), name="dimse-refuse",
                                 daemon=True).start()
            else:
                try:
                    self._pool.submit(self._on_connection, assoc, tls)
                except RuntimeError:  # stopping: the pool takes no more work
                    with self._lock:
                        self._active.pop(assoc, None)
                    assoc.abort(0x00, 0x00)

    def _secure(self, assoc: Association, tls: ssl.SSLContext | None) -> None:
        """The TLS handshake of a connection to the TLS port (Aborted, audited, on failure)."""
        if tls is None:
            return
        try:
            assoc.start_tls(tls, min(self.settings.dicom_network_timeout_s, ACSE_TIMEOUT_S))
        except Aborted as exc:
            log.info("DICOM TLS connection from %s closed: %s", assoc.peer, exc)
            self._audit_rejection(assoc, str(exc))
            raise

    def _refuse(self, assoc: Association, tls: ssl.SSLContext | None) -> None:
        try:
            self._secure(assoc, tls)
            assoc.read_request()
            self._audit_rejection(assoc, "local limit exceeded")
            assoc.reject(0x02, 0x03, 0x02)  # transient, presentation, local limit
        except (Aborted, ProtocolError):
            assoc.abort()
        except Exception:
            log.exception("refusing an association from %s failed", assoc.peer)
            assoc.abort()
        finally:
            self._refusers.release()

    def _on_connection(self, assoc: Association, tls: ssl.SSLContext | None) -> None:
        try:
            self._secure(assoc, tls)
            facility = self._negotiate(assoc)
            if facility is not None:
                self._serve(assoc, facility)
        except ProtocolError as exc:
            log.warning("aborting association from %s: %s", assoc.peer, exc)
            assoc.abort(0x02, exc.reason)
        except Aborted:
            assoc.close()
        except Exception:
            log.exception("association from %s failed", assoc.peer)
            assoc.abort(0x02, 0x00)
        finally:
            with self._lock:
                self._active.pop(assoc, None)

    def _negotiate(self, assoc: Association) -> FacilityRef | None:
        rq = assoc.read_request()
        calling = rq.calling_ae_title.strip()
        if self._stopping:
            self._audit_rejection(assoc, "shutting down")
            assoc.reject(0x02, 0x03, 0x02)  # transient, presentation, local limit
            return None
        try:
            facility = self._on_loop(self.receiver.facilities.by_ae_title(calling), 10.0)
        except Exception:
            log.exception("facility lookup failed; rejecting association from %s", calling)
            assoc.reject(0x02, 0x01, 0x01)  # transient, service-user, no reason given
            return None
        if facility is None:
            log.warning("rejecting association: calling AE %r is not a registered facility",
                        calling)
            self._audit_rejection(assoc, UNKNOWN_CALLING_AE)  # durable before the reply
            assoc.reject(0x01, 0x01, 0x03)  # permanent, service-user, calling AE
            return None
        refusal = check_peer(facility, assoc.peer_host, assoc.tls, assoc.client_subject)
        if refusal is not None:
            log.warning("rejecting association from %s as %r (facility %s): %s", assoc.peer,
                        calling, facility.name, refusal.reason)
            self._audit_rejection(assoc, refusal.reason, facility)
            assoc.reject(refusal.result, refusal.source, refusal.diagnostic)
            return None
        assoc.accept(self._supported)
        return facility

    def _serve(self, assoc: Association, facility: FacilityRef) -> None:
        studies: set[str] = set()
        clock = StageClock(metrics.INGEST_STAGE_SECONDS)
        for message in assoc.messages():
            clock.lap("read")
            with self._lock:
                if self._stopping:
                    break
                self._active[assoc] = True
            try:
                status = self._handle(assoc, message, facility, studies, clock)
                assoc.respond(message, status)
                clock.lap("respond")
            finally:
                with self._lock:
                    self._active[assoc] = False
            if self._stopping:
                break
        if self._stopping:
            assoc.abort(0x00, 0x00)
        elif studies and self.on_released is not None:
            self.on_released(facility, studies)

    def _handle(self, assoc: Association, message: Message,
                facility: FacilityRef, studies: set[str],
                clock: StageClock | None = None) -> int | Dataset:
        command = message.command.command_field
        if command == C_ECHO_RQ:
            return 0x0000
        if command != C_STORE_RQ:
            raise ProtocolError(f"DIMSE command 0x{command:04X} is not offered", 0x00)
        if message.fragments is None:
            return self._too_large(facility, message)
        rq = message.command
        header = file_header(rq.affected_sop_class_uid, rq.affected_sop_instance_uid,
                             str(message.context.transfer_syntax[0]))
        data = message.joined(header)
        calling = assoc.request.calling_ae_title.strip() if assoc.request else ""
        source_ref = f"{calling}@{assoc.peer}#{rq.message_id}"
        if clock is not None:
            clock.lap("join")
        try:
            result = self.receiver.receive_blocking(
                facility, data, "dimse", source_ref, self.loop,
                timeout_s=self.settings.dicom_store_timeout_s, clock=clock)
        except Exception as exc:
            log.error("C-STORE from %s not stored: %r", source_ref, exc)
            return dimse_status.failure_status(exc)
        if result.outcome is Outcome.REJECTED:
            return dimse_status.rejected_status(result, data[len(header):])
        if result.outcome is Outcome.STORED and result.study_instance_uid:
            studies.add(result.study_instance_uid)
        return dimse_status.store_status(result)

    def _on_loop(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def _too_large(self, facility: FacilityRef, message: Message) -> Dataset:
        text = (f"object is over {message.dataset_size} bytes; the limit is "
                f"{self.max_object_bytes} bytes")

        self._audit("study.receive_failed", StudyRef(facility.name),
                    error_class="OBJECT_TOO_LARGE", error_message=text,
                    context={"reason": "OBJECT_TOO_LARGE", "source": "dimse",
                             "sop_instance_uid": message.command.affected_sop_instance_uid})
        return dimse_status.status_dataset(dimse_status.OUT_OF_RESOURCES,
                                           f"OBJECT_TOO_LARGE: {text}")

    def _audit_rejection(self, assoc: Association, reason: str,
                         facility: FacilityRef | None = None) -> None:
        """`association.rejected`, coalesced per reason, peer address and calling AE."""
        rq = assoc.request
        calling = rq.calling_ae_title.strip()[:16] if rq else ""
        left_out = self._coalescer.admit(reason.split(":")[0], assoc.peer_host, calling)
        if left_out is None:
            return
        context: dict[str, Any] = {
            "calling_ae": calling,
            "called_ae": rq.called_ae_title.strip()[:16] if rq else "",
            "peer": assoc.peer, "reason": reason, "tls": assoc.tls or reason.startswith("TLS")}
        if assoc.client_subject:
            context["client_certificate"] = assoc.client_subject
        if left_out:
            context["coalesced"] = left_out  # the same refusals left out before this one
        self._audit("association.rejected", StudyRef(facility.name) if facility else None,
                    error_class="ASSOCIATION_REJECTED", error_message=reason, context=context)

    def _audit(self, event_type: str, study: StudyRef | None, **fields: Any) -> None:
        """Durable before it returns: stored, or spooled while the database is down."""
        try:
            self._on_loop(record_or_spool(self.receiver.db, self.receiver.topology,
                                          self.receiver.spool, event_type, ACTOR, study,
                                          **fields), 30.0)
        except Exception:
            log.exception("could not audit %s", event_type)
