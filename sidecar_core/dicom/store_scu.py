"""C-STORE SCU that sends a file's dataset bytes exactly as stored (CLI, PACS export, tests),
over plain TCP or DICOM TLS (PS3.15 Annex B)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from types import TracebackType
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from sidecar_core.dicom.uids import is_valid_uid

T = TypeVar("T")
MAX_CONTEXTS = 127  # 128 presentation contexts at most, one is Verification


class AssociationRefused(Exception):
    """The peer rejected or aborted the association; `rejected` holds (result, source, reason),
    `tls_error` why the TLS handshake failed when that is why."""

    def __init__(self, message: str, rejected: tuple[int, int, int] | None = None,
                 tls_error: str | None = None, tls_verify_failed: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected
        self.tls_error = tls_error
        self.tls_verify_failed = tls_verify_failed


def tls_handshake_problem(host: str, port: int, context: ssl.SSLContext,
                          timeout_s: float = 10.0,
                          server_name: str | None = None) -> tuple[str, bool] | None:
    """(why, certificate not verified) when a TLS handshake with host:port fails, None when it
    succeeds or the peer cannot be reached at all (pynetdicom keeps no reason of its own)."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None
    try:
        with context.wrap_socket(raw, server_hostname=server_name or host) as tls:
            # Under TLS 1.3 a peer refuses our client certificate after the handshake: its
            # alert is the first thing to read (a DICOM peer otherwise waits for our PDU).
            tls.settimeout(min(timeout_s, 2.0))
            with contextlib.suppress(TimeoutError, BlockingIOError):
                tls.recv(1)
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message}", True
    except (ssl.SSLError, OSError) as exc:
        return str(getattr(exc, "reason", None) or exc).replace("_", " ").lower(), False
    finally:
        raw.close()


class ContextRejected(Exception):
    """The SCP refused the presentation context (`result`: 3 abstract syntax not supported,
    4 transfer syntax not supported) so the object cannot be sent on this association."""

    def __init__(self, message: str, result: int) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class Outgoing:
    """What one C-STORE sends: identity for the request and the raw encoded dataset."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes

    @property
    def context(self) -> tuple[str, str]:
        return self.sop_class_uid, self.transfer_syntax_uid


def _not_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag.group != 2


def _guess_syntax(ds: Dataset) -> str:
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def prepare(data: bytes) -> Outgoing:
    """Splits a Part 10 file (or a bare dataset) into request identity and dataset bytes.

    Anything unreadable is still sendable (the SCP decides): it goes as Secondary Capture with
    a fresh SOP Instance UID and Implicit VR Little Endian.
    """
    fp = BytesIO(data)
    meta = Dataset()
    offset = 0
    with contextlib.suppress(Exception):
        read_preamble(fp, True)
        meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                            stop_when=_not_meta)
        offset = fp.tell()
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not (sop_class and sop_instance and syntax):
        with contextlib.suppress(Exception):
            ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID"])
            sop_class = sop_class or str(ds.get("SOPClassUID", "") or "")
            sop_instance = sop_instance or str(ds.get("SOPInstanceUID", "") or "")
            syntax = syntax or _guess_syntax(ds)
    if not is_valid_uid(sop_class):
        sop_class = SecondaryCaptureImageStorage
    if not is_valid_uid(sop_instance):
        sop_instance = generate_uid()
    if not is_valid_uid(syntax):
        syntax = ImplicitVRLittleEndian
    return Outgoing(sop_class, sop_instance, syntax, data[offset:])


def _nodelay(event: evt.Event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class StoreSCU:
    """One association proposing `contexts` (SOP class, transfer syntax); `store` sends one."""

    def __init__(self, host: str, port: int, calling_ae: str, called_ae: str,
                 contexts: Iterable[tuple[str, str]], timeout_s: float = 60.0,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.ae = AE(ae_title=calling_ae)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout_s
        self.ae.maximum_pdu_size = 0
        for sop_class, syntax in dict.fromkeys(contexts):
            self.ae.add_requested_context(sop_class, [syntax])
        self.ae.add_requested_context(Verification)
        self.address = (host, port, called_ae)
        self.tls = tls  # DICOM TLS: the peer's certificate verified for `server_name`
        self.server_name = server_name or host  # (host is the address connected to)
        self.assoc: Association | None = None
        self._msg_id = 0

    def __enter__(self) -> StoreSCU:
        host, port, called = self.address
        assoc = self.ae.associate(host, port, ae_title=called,
                                  evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
                                  tls_args=(self.tls, self.server_name) if self.tls else None)
        if not assoc.is_established:
            rj = assoc.acceptor.primitive
            if assoc.is_rejected and rj is not None:
                raise AssociationRefused(
                    f"association rejected (result {rj.result_str}, source {rj.source_str}, "
                    f"reason {rj.reason_str})",
                    (int(rj.result or 0), int(rj.result_source or 0), int(rj.diagnostic or 0)))
            problem = (tls_handshake_problem(host, port, self.tls, self.ae.acse_timeout or 10,
                                             self.server_name)
                       if self.tls and not assoc.is_rejected else None)
            if problem is not None:
                raise AssociationRefused(f"DICOM TLS handshake with {host}:{port} failed: "
                                         f"{problem[0]}", tls_error=problem[0],
                                         tls_verify_failed=problem[1])
            raise AssociationRefused(f"no association with {host}:{port} (aborted or refused)")
        self.assoc = assoc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None

    def echo(self) -> int:
        status = self.assoc.send_c_echo()  # type: ignore[union-attr]
        return int(status.Status) if "Status" in status else -1

    def store(self, item: Outgoing) -> Dataset:
        """Sends one object; returns the response status dataset (empty on abort/timeout)."""
        assoc = self.assoc
        if assoc is None or not assoc.is_established:
            raise AssociationRefused("the association is no longer established")
        for cx in assoc.rejected_contexts:
            if cx.abstract_syntax == item.sop_class_uid and \
                    item.transfer_syntax_uid in cx.transfer_syntax:
                raise ContextRejected(f"{item.sop_class_uid} with {item.transfer_syntax_uid}: "
                                      f"{cx.status}", int(cx.result or 0))
        context = assoc._get_valid_context(item.sop_class_uid, item.transfer_syntax_uid, "scu",
                                           allow_conversion=False)
        self._msg_id = self._msg_id % 65535 + 1
        req = C_STORE()
        req.MessageID = self._msg_id
        req.Priority = 2
        req.AffectedSOPClassUID = item.sop_class_uid
        req.AffectedSOPInstanceUID = item.sop_instance_uid
        req.DataSet = BytesIO(item.dataset)
        # the same steps as Association.send_c_store, minus decoding/re-encoding the dataset
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        try:
            assoc.dimse.send_msg(req, int(context.context_id or 0))
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        if rsp is None:
            assoc._handle_no_response()
            return Dataset()
        return assoc._check_received_status(rsp)


def status_of(rsp: Dataset) -> int | None:
    """The Status of a response dataset, None when there was no response."""
    return int(rsp.Status) if "Status" in rsp else None


def chunks(items: list[T], key: Callable[[T], tuple[str, str]],
           limit: int = MAX_CONTEXTS) -> list[list[T]]:
    """Consecutive groups of items that each need at most `limit` presentation contexts."""
    groups: list[list[T]] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        context = key(item)
        if not groups or (context not in seen and len(seen) >= limit):
            groups.append([])
            seen = set()
        seen.add(context)
        groups[-1].append(item)
    return groups
