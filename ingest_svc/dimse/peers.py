"""Who may open an association to a facility's AE title: the facility's allowed peer addresses
(both DICOM ports) and, where it requires one, a client certificate verified on the DICOM TLS
port; and the coalescing of the audit events of refused peers, so a flood is a few rows."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ingest_svc.facilities import FacilityRef
from sidecar_core.security.dicom_tls import host_allowed

ADDRESS_NOT_ALLOWED = "peer address not allowed"
CLIENT_CERT_REQUIRED = "client certificate required"


@dataclass(frozen=True)
class Refusal:
    """Why an association is refused, and the A-ASSOCIATE-RJ that says so (PS3.8 9.3.4)."""

    reason: str
    result: int  # 1 rejected-permanent
    source: int  # 1 DICOM UL service-user
    diagnostic: int  # 1 no reason given, 3 calling AE title not recognised


def check_peer(facility: FacilityRef, peer_host: str, tls: bool,
               client_subject: str | None) -> Refusal | None:
    """None when the peer may associate as `facility`'s AE title.

    An address outside the facility's `dicom_allowed_hosts` is told "calling AE title not
    recognised" (that AE title is not known from there); a connection without a verified
    client certificate (plain port, or TLS without one) to a facility that requires one gets
    "no reason given"."""
    if not host_allowed(peer_host, facility.allowed_hosts):
        return Refusal(ADDRESS_NOT_ALLOWED, 0x01, 0x01, 0x03)
    if facility.require_client_cert and not (tls and client_subject):
        return Refusal(CLIENT_CERT_REQUIRED, 0x01, 0x01, 0x01)
    return None


class Coalescer:
    """At most one audit event per (reason, peer address, calling AE) per `window_s`, and at
    most `per_host` per (reason, peer address) (a flood cannot vary the AE title to get more);
    an admitted event carries how many were left out before it. Thread-safe."""

    def __init__(self, window_s: float = 60.0, per_host: int = 20) -> None:
        self.window_s = window_s
        self.per_host = per_host
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], float] = {}
        self._hosts: dict[tuple[str, str], tuple[float, int, int]] = {}  # start, admitted, left

    def admit(self, reason: str, host: str, calling_ae: str) -> int | None:
        """The number of events of (`reason`, `host`) left out since the last one admitted
        when this one is to be recorded, None when it is to be left out."""
        now = time.monotonic()
        with self._lock:
            if len(self._last) > 10_000:  # forget the windows that are over
                self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}
                self._hosts = {k: v for k, v in self._hosts.items()
                               if now - v[0] < self.window_s}
            start, admitted, left = self._hosts.get((reason, host), (now, 0, 0))
            if now - start >= self.window_s:
                start, admitted = now, 0
            key = (reason, host, calling_ae)
            if now - self._last.get(key, -1e18) < self.window_s or admitted >= self.per_host:
                self._hosts[(reason, host)] = (start, admitted, left + 1)
                return None
            self._last[key] = now
            self._hosts[(reason, host)] = (start, admitted + 1, 0)
            return left
