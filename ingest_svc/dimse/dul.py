"""DICOM upper layer (PS3.8) of the SCP on a blocking socket, with pynetdicom's PDU and DIMSE
codecs.

Each association is served by one thread (DimseServer's pool) that reads PDUs with blocking
calls, stores each object on that same thread and writes the response: a C-STORE is handled with
no hand-off between threads. pynetdicom's own AE runs two threads per association that poll
every millisecond; here a message is handled as soon as its last fragment arrives.

On the DICOM TLS port (PS3.15 Annex B) the connection is wrapped in TLS before the first PDU
(`Association.start_tls`); everything above the socket is the same.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom._globals import APPLICATION_CONTEXT_NAME
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from ingest_svc.dimse.codec import Command, command_pdus, decode_command, encode_response

ASSOCIATE_RQ, P_DATA, RELEASE_RQ, ABORT = 0x01, 0x04, 0x05, 0x07
RELEASE_RP_PDU = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_MAX_CONTROL_PDU = 1 << 20  # association request, release, abort
_MAX_DATA_PDU = 64 << 20  # sanity bound when the announced maximum is 0 (unlimited)
ACSE_TIMEOUT_S = 30.0  # a connection that sends no A-ASSOCIATE-RQ holds a slot this long


class Aborted(Exception):
    """The association ended without release: peer abort, closed connection or our abort."""


class ProtocolError(Exception):
    """The peer broke PS3.8; the association is aborted with `reason` (A-ABORT, provider)."""

    def __init__(self, message: str, reason: int = 0x02) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Message:
    """One DIMSE request: its command set and, unless discarded for size, its dataset as the
    received fragments (joined once, by whoever needs the bytes: a large object is not copied
    more than once)."""

    context: PresentationContext
    command: Command
    fragments: list[bytes] | None
    dataset_size: int = 0

    @property
    def discarded(self) -> bool:
        return self.fragments is None and self.dataset_size > 0

    def joined(self, prefix: bytes = b"") -> bytes:
        """`prefix` + the dataset bytes, in one copy; the fragments are released."""
        assert self.fragments is not None
        data = b"".join([prefix, *self.fragments])
        self.fragments = []
        return data


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    return struct.pack(">BBIBBBB", ABORT, 0, 4, 0, 0, source, reason)


def reject_pdu(result: int, source: int, diagnostic: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, diagnostic
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def supported_contexts(abstract_syntaxes: list[str], transfer_syntaxes: list[str]
                       ) -> list[PresentationContext]:
    contexts = []
    for uid in abstract_syntaxes:
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = list(transfer_syntaxes)
        contexts.append(cx)
    return contexts


class Association:
    """One accepted connection; the caller decides on the request, then iterates messages."""

    def __init__(self, sock: socket.socket, max_pdu: int, max_dataset: int,
                 timeout_s: float) -> None:
        self.sock = sock
        self.max_pdu, self.max_dataset, self.timeout_s = max_pdu, max_dataset, timeout_s
        self.request: A_ASSOCIATE | None = None
        self.contexts: dict[int, PresentationContext] = {}
        self.peer_max_pdu = 0
        self.tls = False
        # The subject of the client certificate verified during the TLS handshake, if any.
        self.client_subject: str | None = None
        self._closed = False
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            host, port, *_ = sock.getpeername()
            self.peer_host = str(host)
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer_host, self.peer = "?", "?:0"

    def start_tls(self, context: ssl.SSLContext, timeout_s: float) -> None:
        """The server side of the TLS handshake, all of it within `timeout_s` (a peer dripping
        bytes is cut off then). Aborted when it fails: a plaintext peer, a client certificate
        that does not verify, no common protocol or cipher, a timeout."""
        raw = self.sock
        raw.settimeout(timeout_s)
        tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        self.sock = tls
        timer = threading.Timer(timeout_s, self._cut)
        timer.daemon = True
        timer.start()
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.close()
            raise Aborted(f"TLS handshake failed: {_tls_reason(exc)}") from exc
        finally:
            timer.cancel()
        self.tls = True
        cert = tls.getpeercert()
        if cert:  # only a certificate that verified against the client CA is returned
            subject = cast(tuple[tuple[tuple[str, str], ...], ...], cert.get("subject", ()))
            self.client_subject = ", ".join(
                f"{k}={v}" for rdn in subject for k, v in rdn)[:200] or "?"

    def _cut(self) -> None:
        """Shuts the connection down under a blocked reader (TLS or not) without touching the
        TLS state another thread is using."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def _read(self, n: int, deadline: float) -> bytes:
        """Exactly `n` bytes, all of them by `deadline` (a peer dripping bytes cannot hold the
        association's thread past it)."""
        buffer = bytearray(n)
        view, got = memoryview(buffer), 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the peer sent too slowly")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv_into(view[got:], n - got)
            if chunk == 0:
                raise ConnectionResetError("the peer closed the connection")
            got += chunk
        return bytes(buffer)

    def _pdu(self, timeout_s: float) -> tuple[int, bytes]:
        """The next PDU; the peer has `timeout_s` to start it and as long again to finish it."""
        try:
            header = self._read(6, time.monotonic() + timeout_s)
            kind, _, length = struct.unpack(">BBI", header)
            limit = (self.max_pdu or _MAX_DATA_PDU) if kind == P_DATA else _MAX_CONTROL_PDU
            if length > limit:
                raise ProtocolError(f"PDU of {length} bytes exceeds {limit}", 0x06)
            return kind, header + self._read(length, time.monotonic() + timeout_s)
        except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
            raise Aborted(f"connection lost ({type(exc).__name__})") from exc

    def read_request(self) -> A_ASSOCIATE:
        kind, raw = self._pdu(min(self.timeout_s, ACSE_TIMEOUT_S))
        if kind != ASSOCIATE_RQ:
            raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type {kind}", 0x02)
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(raw)
        self.request = pdu.to_primitive()
        for item in self.request.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = int(item.maximum_length_received or 0)
        return self.request

    def reject(self, result: int, source: int, diagnostic: int) -> None:
        self._send(reject_pdu(result, source, diagnostic))
        self.close()

    def accept(self, supported: list[PresentationContext]) -> None:
        rq = self.request
        assert rq is not None
        if rq.application_context_name != APPLICATION_CONTEXT_NAME:
            self.reject(0x01, 0x01, 0x02)  # application context name not supported
            raise Aborted("unsupported application context")
        roles: dict[Any, tuple[Any, Any]] = {
            r.sop_class_uid: (r.scu_role, r.scp_role) for r in rq.user_information
            if isinstance(r, SCP_SCU_RoleSelectionNegotiation)}
        results, role_items = negotiate_as_acceptor(
            rq.presentation_context_definition_list, supported, roles or None)
        self.contexts = {int(cx.context_id or 0): cx for cx in results if cx.result == 0x00}
        ac = A_ASSOCIATE()
        ac.application_context_name = APPLICATION_CONTEXT_NAME
        ac.calling_ae_title, ac.called_ae_title = rq.calling_ae_title, rq.called_ae_title
        ac.result, ac.result_source = 0x00, 0x01
        ac.presentation_context_definition_results_list = results
        length, cls_uid = MaximumLengthNotification(), ImplementationClassUIDNotification()
        version = ImplementationVersionNameNotification()
        length.maximum_length_received = self.max_pdu
        cls_uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        ac.user_information = [length, cls_uid, version, *role_items]
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(ac)
        self._send(bytes(pdu.encode()))

    def messages(self) -> Iterator[Message]:
        """DIMSE requests until the peer releases (then returns) or aborts (Aborted)."""
        command: list[bytes] = []
        data: list[bytes] | None = []
        cx_id, size, cmd = -1, 0, None
        while True:
            kind, raw = self._pdu(self.timeout_s)
            if kind == RELEASE_RQ:
                self._send(RELEASE_RP_PDU)
                self.close()
                return
            if kind == ABORT:
                self.close()
                raise Aborted("the peer aborted the association")
            if kind != P_DATA:
                raise ProtocolError(f"unexpected PDU type {kind}", 0x02)
            pos = 6
            while pos < len(raw):
                (length,) = struct.unpack_from(">I", raw, pos)
                if length < 2 or pos + 4 + length > len(raw):
                    raise ProtocolError("malformed presentation data value item", 0x06)
                pdv_cx, control = raw[pos + 4], raw[pos + 5]
                fragment = raw[pos + 6:pos + 4 + length]
                pos += 4 + length
                if pdv_cx not in self.contexts or (cx_id != -1 and pdv_cx != cx_id):
                    raise ProtocolError(f"presentation context {pdv_cx} is not in use", 0x06)
                cx_id = pdv_cx
                if control & 0x01:  # command fragment
                    if cmd is not None:
                        raise ProtocolError("command fragment inside a dataset", 0x05)
                    command.append(fragment)
                    if control & 0x02:
                        try:
                            cmd = decode_command(b"".join(command))
                        except ValueError as exc:
                            raise ProtocolError(str(exc), 0x06) from exc
                        if not cmd.has_dataset:
                            yield Message(self.contexts[cx_id], cmd, [])
                            command, data, cx_id, size, cmd = [], [], -1, 0, None
                    continue
                if cmd is None:
                    raise ProtocolError("dataset fragment before its command", 0x05)
                size += len(fragment)
                if data is not None and size <= self.max_dataset:
                    data.append(fragment)
                else:
                    data = None  # too large: keep reading, stop keeping
                if control & 0x02:
                    yield Message(self.contexts[cx_id], cmd, data, size)
                    command, data, cx_id, size, cmd = [], [], -1, 0, None

    def respond(self, request: Message, status: int | Dataset) -> None:
        """Sends the C-STORE-RSP / C-ECHO-RSP; `status` an int or a status Dataset carrying
        Status and optionally ErrorComment / OffendingElement."""
        comment, offending = "", cast(tuple[int, ...], ())
        if isinstance(status, Dataset):
            comment = str(status.get("ErrorComment", "") or "")
            value = status.get("OffendingElement", None)
            offending = tuple(int(t) for t in (value if isinstance(value, list) else
                                               [value] if value is not None else []))
            status = int(status.Status)
        command = encode_response(request.command, status, comment, offending)
        self._send(command_pdus(int(request.context.context_id or 0), command,
                                self.peer_max_pdu))

    def _send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.timeout_s)
            self.sock.sendall(data)
        except (OSError, ValueError) as exc:
            raise Aborted(f"connection lost ({type(exc).__name__})") from exc

    def abort(self, source: int = 0x02, reason: int = 0x00, *,
              from_other_thread: bool = False) -> None:
        """Sends A-ABORT (best effort) and closes; safe repeatedly, and from another thread
        (`from_other_thread`: over TLS the A-ABORT is then left out, since a TLS connection
        must not be written while its own thread reads it)."""
        if not self._closed and not (from_other_thread and self.tls):
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(1.0)
                self.sock.sendall(abort_pdu(source, reason))
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cut()
        with contextlib.suppress(OSError):
            self.sock.close()


def _tls_reason(exc: BaseException) -> str:
    """One line on why a handshake failed (OpenSSL's reason where there is one)."""
    reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"client certificate not verified ({exc.verify_message})"
    elif isinstance(exc, TimeoutError):
        reason = "timed out"
    return str(reason or type(exc).__name__).replace("_", " ").lower()[:200]
