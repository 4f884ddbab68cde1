"""IHE ATNA export: audit events as DICOM audit messages (PS3.15 A.5) over syslog.

The table `audit_events` is the truth: the forwarder reads it chain by chain in chain order
(`chain_pos`, gap-free and set at commit, docs/audit.md) and keeps one cursor per chain in
`atna_cursor`, advanced only after the repository took the message. A repository that is
down leaves the events in the table (the spool) and they are sent, in order, once it is back.
Mapping of event types to messages: docs/audit.md, "IHE ATNA export".
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from sqlalchemy import text

from sidecar_core.observability import metrics
from sidecar_core.security.edge_tls import client_context

log = logging.getLogger(__name__)

# RFC 5424 header fields: facility 10 (security/authorization), severity 5 (notice); the
# MSGID the IHE ITI TF-2 (ITI-20) prescribes for audit messages.
FACILITY, SEVERITY = 10, 5
MSGID = "IHE+RFC-3881"
APP_NAME = "sidecar"
DCM = "DCM"

# EventID codes of PS3.16 CID 400, used by PS3.15 A.5.3.
APPLICATION_ACTIVITY = ("110100", "Application Activity")
BEGIN_TRANSFERRING = ("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = ("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
QUERY = ("110112", "Query")
SECURITY_ALERT = ("110113", "Security Alert")
USER_AUTHENTICATION = ("110114", "User Authentication")
# EventTypeCodes (CID 401 / CID 403).
LOGIN = ("110122", "Login")
LOGOUT = ("110123", "Logout")
NODE_AUTHENTICATION = ("110126", "Node Authentication")
SECURITY_CONFIGURATION = ("110129", "Security Configuration")
RESTRICTED_FUNCTION = ("110132", "Use of a restricted function")
SECURITY_ROLES_CHANGED = ("110136", "Security Roles Changed")
# Outcomes (A.5.1): success, minor failure, serious failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"

# type -> (EventID, EventActionCode, EventTypeCode or None)
_EXACT: dict[str, tuple[tuple[str, str], str, tuple[str, str] | None]] = {
    "auth.login_succeeded": (USER_AUTHENTICATION, "E", LOGIN),
    "auth.login_failed": (USER_AUTHENTICATION, "E", LOGIN),
    "auth.login_rate_limited": (USER_AUTHENTICATION, "E", LOGIN),
    "auth.logout": (USER_AUTHENTICATION, "E", LOGOUT),
    "study.received": (INSTANCES_TRANSFERRED, "C", None),
    "study.updated": (INSTANCES_TRANSFERRED, "U", None),
    "study.duplicate_seen": (INSTANCES_TRANSFERRED, "R", None),
    "study.receive_failed": (INSTANCES_TRANSFERRED, "C", None),
    "export.sent": (BEGIN_TRANSFERRING, "E", None),
    "export.failed": (BEGIN_TRANSFERRING, "E", None),
    "review.study_opened": (INSTANCES_ACCESSED, "R", None),
    # the gateway's access audit (docs/audit.md, "Access audit"): a read, a QIDO search, a refusal
    "phi.accessed": (INSTANCES_ACCESSED, "R", None),
    "phi.queried": (QUERY, "E", None),
    "phi.access_refused": (INSTANCES_ACCESSED, "R", None),
    "security.permission_denied": (SECURITY_ALERT, "E", RESTRICTED_FUNCTION),
    "security.egress_refused": (SECURITY_ALERT, "E", RESTRICTED_FUNCTION),
    "security.token_rejected": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "association.rejected": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "hl7.message_rejected": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "hl7.message_too_large": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "hl7.connections_refused": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "hl7.tls_handshake_failed": (SECURITY_ALERT, "E", NODE_AUTHENTICATION),
    "security.credential_issued": (SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
    "security.credential_revoked": (SECURITY_ALERT, "E", SECURITY_CONFIGURATION),
}
# Refusals: an outcome of serious failure even without an error class.
_REFUSALS = {"phi.access_refused", "auth.login_failed", "auth.login_rate_limited",
             "security.permission_denied",
             "security.egress_refused", "security.token_rejected", "association.rejected",
             "hl7.message_rejected", "hl7.message_too_large", "hl7.connections_refused",
             "hl7.tls_handshake_failed"}


@dataclass(frozen=True)
class Event:
    """The fields of one `audit_events` row the message is made of."""

    type: str
    at: datetime
    actor: str
    facility: str = ""
    accession: str = ""
    study_instance_uid: str = ""
    error_class: str = ""
    context: dict[str, Any] | None = None
    id: str = ""
    chain: int = 0
    chain_pos: int = 0


def classify(event_type: str) -> tuple[tuple[str, str], str, tuple[str, str] | None, bool]:
    """(EventID, EventActionCode, EventTypeCode, has a study object) of an event type; the
    generic rule for types not listed: access events (`*.accessed`, `*.opened`, `*.read`)
    are DICOM Instances Accessed (R); other `security.*` a Security Alert; `study.*`,
    `review.*`, `draft.*`, `ai_*`, `export.*`, `handoff.*`, `legacy_report.*` a DICOM
    Instances Accessed of action U (the study's record changed); the rest Application
    Activity."""
    if event_type in _EXACT:
        eid, action, etc = _EXACT[event_type]
        return eid, action, etc, eid != USER_AUTHENTICATION and eid != SECURITY_ALERT
    head = event_type.split(".", 1)[0]
    tail = event_type.rsplit(".", 1)[-1]
    if tail in ("accessed", "opened", "read", "listed", "exported"):
        return INSTANCES_ACCESSED, "R", None, True
    if head == "query" or tail == "queried":
        return QUERY, "E", None, True
    if head == "security":
        return SECURITY_ALERT, "E", None, False
    if head in ("study", "review", "draft", "ai_run", "ai_result", "export", "handoff",
                "legacy_report", "llm_assist"):
        return INSTANCES_ACCESSED, "U", None, True
    return APPLICATION_ACTIVITY, "E", None, False


def _code(parent: ET.Element, tag: str, code: tuple[str, str]) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": DCM,
                                       "originalText": code[1]})


def audit_message(event: Event, source_id: str, site: str = "") -> bytes:
    """The DICOM AuditMessage (PS3.15 A.5.1) of one event, as UTF-8 XML."""
    eid, action, etc, has_study = classify(event.type)
    ctx = event.context or {}
    refused = bool(event.error_class) or event.type in _REFUSALS \
        or str(ctx.get("outcome", "")).lower() in ("denied", "refused", "failed")
    outcome = (SERIOUS_FAILURE if event.type in _REFUSALS else MINOR_FAILURE) if refused \
        else SUCCESS
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action,
        "EventDateTime": event.at.astimezone(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "EventOutcomeIndicator": outcome})
    _code(ident, "EventID", eid)
    if etc is not None:
        _code(ident, "EventTypeCode", etc)
    # the product's own type, so that nothing of the original is lost
    ET.SubElement(ident, "EventTypeCode", {"csd-code": event.type[:64],
                                           "codeSystemName": "sidecar.audit.v1",
                                           "originalText": event.type})
    if event.error_class:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.error_class
    calling_ae = str(ctx.get("calling_ae") or "")
    user = str(ctx.get("username") or ctx.get("user") or calling_ae or event.actor or "unknown")
    address = str(ctx.get("address") or ctx.get("client_address") or ctx.get("peer") or "")
    attrs = {"UserID": user, "UserIsRequestor": "true"}
    if ctx.get("session_id"):
        attrs["AlternativeUserID"] = str(ctx["session_id"])
    elif calling_ae:  # a DICOM peer (PS3.15 A.5.2.5)
        attrs["AlternativeUserID"] = f"AETITLES={calling_ae}"
    if address:
        attrs["NetworkAccessPointID"] = address.rsplit(":", 1)[0] if address.count(":") == 1 \
            else address
        attrs["NetworkAccessPointTypeCode"] = "2"
    requestor = ET.SubElement(root, "ActiveParticipant", attrs)
    if ctx.get("role"):
        ET.SubElement(requestor, "RoleIDCode", {"csd-code": str(ctx["role"]),
                                                "codeSystemName": "sidecar.role",
                                                "originalText": str(ctx["role"])})
    ET.SubElement(root, "ActiveParticipant", {
        "UserID": source_id, "AlternativeUserID": event.actor or APP_NAME,
        "UserIsRequestor": "false", "NetworkAccessPointID": socket.gethostname(),
        "NetworkAccessPointTypeCode": "1"})
    src = ET.SubElement(root, "AuditSourceIdentification",
                        {"AuditSourceID": source_id, **({"AuditEnterpriseSiteID": site}
                                                        if site else {})})
    # 4: application server process tier
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "4"})
    if has_study and event.study_instance_uid:
        study = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": event.study_instance_uid,
            "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"})
        _code(study, "ParticipantObjectIDTypeCode", ("110180", "Study Instance UID"))
        # the schema wants a name or a query: the study's accession (its name at the site)
        ET.SubElement(study, "ParticipantObjectName").text = \
            event.accession or event.study_instance_uid
        if event.accession:
            ET.SubElement(study, "ParticipantObjectDetail", {
                "type": "Accession", "value": _b64(event.accession)})
        if event.facility:
            ET.SubElement(study, "ParticipantObjectDetail", {
                "type": "Facility", "value": _b64(event.facility)})
    patient = ctx.get("patient_ref") or ctx.get("patient_id")
    if has_study and patient:
        pat = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": str(patient), "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1"})
        ET.SubElement(pat, "ParticipantObjectIDTypeCode", {
            "csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"})
        ET.SubElement(pat, "ParticipantObjectName").text = str(patient)
    if eid == QUERY and ctx.get("query"):
        q = ET.SubElement(root, "ParticipantObjectIdentification", {
            "ParticipantObjectID": "1.2.840.10008.5.1.4.1.2.2.1",
            "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"})
        _code(q, "ParticipantObjectIDTypeCode", ("110181", "SOP Class UID"))
        ET.SubElement(q, "ParticipantObjectQuery").text = _b64(str(ctx["query"]))
    # one line (a syslog repository may escape line breaks)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="utf-8",
                                                                   xml_declaration=False)


def _b64(value: str) -> str:
    import base64

    return base64.b64encode(value.encode()).decode()


def syslog_frame(message: bytes, at: datetime, hostname: str | None = None) -> bytes:
    """One RFC 5424 syslog message carrying `message` (UTF-8, with the BOM)."""
    pri = FACILITY * 8 + SEVERITY
    stamp = at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    host = (hostname or socket.gethostname() or "-")[:255].replace(" ", "_")
    header = f"<{pri}>1 {stamp} {host} {APP_NAME} {_procid()} {MSGID} -"
    return header.encode("ascii", "replace") + b" \xef\xbb\xbf" + message


def _procid() -> str:
    import os

    return str(os.getpid())


def octet_counted(frame: bytes) -> bytes:
    """RFC 5425 / RFC 6587 octet-counting: MSG-LEN SP SYSLOG-MSG."""
    return str(len(frame)).encode() + b" " + frame


@dataclass(frozen=True)
class Target:
    """Where the audit repository listens: `tls://`, `tcp://` or `udp://` HOST:PORT."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("tls", "tcp", "udp") or not parts.hostname or not parts.port:
            raise ValueError(f"SIDECAR_AUDIT_SYSLOG must be tls://, tcp:// or udp://HOST:PORT, "
                             f"not {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port)


class Sender:
    """One connection to the repository, opened when needed and dropped on any error."""

    def __init__(self, target: Target, tls: ssl.SSLContext | None = None,
                 timeout_s: float = 10.0) -> None:
        self.target, self.tls, self.timeout_s = target, tls, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: socket.socket | None = None

    async def send(self, frames: list[bytes]) -> None:
        """Sends the frames in order; raises OSError (and closes) when the repository is not
        reachable or the connection broke."""
        if self.target.scheme == "udp":
            if self._udp is None:
                family = socket.AF_INET6 if ":" in self.target.host else socket.AF_INET
                self._udp = socket.socket(family, socket.SOCK_DGRAM)
            for frame in frames:  # RFC 5426: one message per datagram
                self._udp.sendto(frame[:65000], (self.target.host, self.target.port))
            return
        try:
            if self._writer is not None and (self._writer.is_closing() or self._reader is None
                                             or self._reader.at_eof()
                                             or self._reader.exception() is not None):
                # the repository closed it (restarted): writing would vanish in the buffer
                await self.close()
            if self._writer is None:
                self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                    self.target.host, self.target.port,
                    ssl=self.tls if self.target.scheme == "tls" else None,
                    server_hostname=self.target.host if self.target.scheme == "tls" else None),
                    self.timeout_s)
            writer = self._writer
            assert writer is not None  # opened just above
            writer.write(b"".join(octet_counted(f) for f in frames))
            await asyncio.wait_for(writer.drain(), self.timeout_s)
        except (OSError, TimeoutError, ssl.SSLError):
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None


LOCK_KEY = 0x41544E41  # "ATNA": the advisory lock of the one sender

# The next events of each chain after its cursor, in chain order (gap-free: chain_pos counts
# the chain's events at commit), `limit` per chain.
_PENDING = """
SELECT e.id, e.type, e.at, e.actor, e.facility, e.accession, e.study_instance_uid,
       e.error_class, e.context, e.chain, e.chain_pos
FROM audit_chain_heads h LEFT JOIN atna_cursor c ON c.chain = h.chain
CROSS JOIN LATERAL (
  SELECT * FROM audit_events x WHERE x.chain = h.chain AND x.chain_pos > coalesce(c.pos, 0)
  ORDER BY x.chain_pos LIMIT :limit) e
"""
_BACKLOG = """
SELECT count(*) FROM audit_events e LEFT JOIN atna_cursor c ON c.chain = e.chain
WHERE e.chain IS NOT NULL AND e.chain_pos > coalesce(c.pos, 0)
"""
_ADVANCE = """
INSERT INTO atna_cursor (chain, pos) VALUES (:chain, :pos)
ON CONFLICT (chain) DO UPDATE SET pos = greatest(atna_cursor.pos, excluded.pos)
"""


class Forwarder:
    """Follows `audit_events` and delivers each event once, in order, to the repository."""

    def __init__(self, db: Any, sender: Sender, source_id: str, site: str = "",
                 batch: int = 200, retry_s: float = 5.0, poll_s: float = 1.0) -> None:
        self.db, self.sender, self.source_id, self.site = db, sender, source_id, site
        self.batch, self.retry_s, self.poll_s = batch, retry_s, poll_s

    async def pending(self, session: Any = None) -> list[Event]:
        """The next events to send (and the backlog metric)."""
        if session is None:
            async with self.db.read() as own:
                return await self.pending(own)
        rows = (await session.execute(text(_PENDING), {"limit": self.batch})).mappings()
        events = [Event(type=r["type"], at=r["at"], actor=r["actor"],
                        facility=r["facility"], accession=r["accession"],
                        study_instance_uid=r["study_instance_uid"],
                        error_class=r["error_class"], context=r["context"] or {},
                        id=str(r["id"]), chain=int(r["chain"]),
                        chain_pos=int(r["chain_pos"])) for r in rows]
        metrics.AUDIT_SYSLOG_BACKLOG.set((await session.execute(text(_BACKLOG))).scalar_one())
        return events

    async def step(self) -> int:
        """Sends one batch; returns how many events were delivered (0 when none waits, or
        when another process, a workflow replica, is the sender now: a transaction-level
        advisory lock makes one sender at a time, and the cursor moves in that transaction)."""
        async with self.db.unit_of_work() as session:
            if not (await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                          {"k": LOCK_KEY})).scalar_one():
                return 0
            events = await self.pending(session)
            # each chain in its order (the query's), the chains merged by time
            chains: dict[int, list[Event]] = {}
            for ev in sorted(events, key=lambda e: (e.chain, e.chain_pos)):
                chains.setdefault(ev.chain, []).append(ev)
            ready = list(heapq.merge(*chains.values(), key=lambda e: e.at))
            if not ready:
                return 0
            frames = [syslog_frame(audit_message(ev, self.source_id, self.site), ev.at)
                      for ev in ready]
            await self.sender.send(frames)
            heads: dict[int, int] = {}
            for ev in ready:
                heads[ev.chain] = max(heads.get(ev.chain, 0), ev.chain_pos)
            for chain, pos in heads.items():
                await session.execute(text(_ADVANCE), {"chain": chain, "pos": pos})
        metrics.AUDIT_SYSLOG_SENT.inc(len(ready))
        metrics.AUDIT_SYSLOG_BACKLOG.dec(len(ready))
        return len(ready)

    async def run(self, stop: asyncio.Event) -> None:
        """Until stopped: sends what waits, then polls; a failure waits `retry_s` and retries
        the same events (they stay in the table, the spool)."""
        try:
            while not stop.is_set():
                try:
                    sent = await self.step()
                    wait = 0.0 if sent else self.poll_s
                except Exception as exc:  # the repository or the database is away
                    metrics.AUDIT_SYSLOG_FAILURES.inc()
                    log.warning("audit repository not reached (%s); retrying in %.0f s",
                                exc, self.retry_s)
                    wait = self.retry_s
                if wait:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            await self.sender.close()


def forwarder_of(db: Any, url: str, ca: Path | None = None, cert: Path | None = None,
                 key: Path | None = None, source_id: str = "sidecar",
                 site: str = "") -> Forwarder:
    """The forwarder of the settings `SIDECAR_AUDIT_SYSLOG*` (docs/deployment.md)."""
    target = Target.parse(url)
    tls = (client_context(ca, cert, key, what="audit repository TLS")
           if target.scheme == "tls" else None)
    log.info("audit exported to %s://%s:%d (IHE ATNA, RFC 5424)", target.scheme, target.host,
             target.port)
    return Forwarder(db, Sender(target, tls), source_id, site)
