"""ORU^R01 report-completion messages: parse (python-hl7), validate and name what is wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone

import hl7

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
MAX_REPORT_TEXT = 65536  # characters of one report's text kept (OBX-5 lines joined)
RESULT_STATUSES = {"P": "preliminary", "F": "final", "C": "corrected"}
# HL7 table 0357 (message error condition codes)
E_SEGMENT_SEQUENCE = ("100", "Segment sequence error")
E_REQUIRED = ("101", "Required field missing")
E_DATA_TYPE = ("102", "Data type error")
E_TABLE_VALUE = ("103", "Table value not found")
E_MESSAGE_TYPE = ("200", "Unsupported message type")
E_EVENT_CODE = ("201", "Unsupported event code")
E_VERSION = ("203", "Unsupported version id")
E_UNKNOWN_KEY = ("204", "Unknown key identifier")
E_INTERNAL = ("207", "Application internal error")

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?"
                 r"(?:([+-])(\d{2})(\d{2}))?$")


class Hl7Error(Exception):
    """A message we cannot take, with the segment and field at fault and the ACK it earns.

    `ack` is AR (rejected: the message header says something we do not support) or AE (an
    application error in the content)."""

    def __init__(self, ack: str, segment: str, sequence: int, field_no: int,
                 condition: tuple[str, str], text: str) -> None:
        super().__init__(text)
        self.ack = ack
        self.segment = segment
        self.sequence = sequence
        self.field_no = field_no
        self.condition = condition
        self.text = text

    @property
    def location(self) -> str:
        """The field at fault as people write it: `OBR-25` (`MSH` for a missing header)."""
        return f"{self.segment}-{self.field_no}" if self.field_no else self.segment


@dataclass(frozen=True)
class Header:
    """What the ACK needs from MSH, taken even from a message that is otherwise broken."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    control_id: str = ""
    message_type: str = ""
    version: str = ""
    accept_ack_type: str = ""
    application_ack_type: str = ""
    message_at: datetime | None = None

    @property
    def enhanced(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 is valued (HL7 v2 2.9.2)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(frozen=True)
class ReportFact:
    """One OBR of the message: an official report for one accession."""

    accession: str
    accession_field: str
    report_reference: str
    result_status: str
    observed_at: datetime | None
    results_at: datetime | None
    sequence: int
    patient_id: str = ""  # PID-3 CX.1 of the message's patient
    patient_id_issuer: str = ""  # PID-3 CX.4 (assigning authority, its namespace id)
    text: str = ""  # the report text: the OBX observation values after this OBR


@dataclass
class ParsedOru:
    header: Header
    reports: list[ReportFact] = field(default_factory=list)


def decode(raw: bytes) -> str:
    """The message text (UTF-8, or Latin-1 where the bytes are not UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_of(text: str) -> Header:
    """MSH fields, best effort: what a NAK can echo back even for a broken message."""
    first = text.lstrip().split("\r", 1)[0].split("\n", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return Header()
    sep = first[3]
    parts = first.split(sep)
    comp = first[4] if len(first) > 4 else "^"

    def f(n: int) -> str:  # MSH-1 is the separator itself: MSH-n is parts[n - 1]
        return parts[n - 1] if 0 < n - 1 < len(parts) else ""

    return Header(
        sending_application=f(3), sending_facility=f(4).split(comp)[0],
        receiving_application=f(5), receiving_facility=f(6), control_id=f(10),
        message_type=f(9), version=f(12).split(comp)[0], accept_ack_type=f(15),
        application_ack_type=f(16),
    )


def parse_oru(raw: bytes) -> ParsedOru:
    """Parses and validates an ORU^R01; raises Hl7Error naming the segment and field."""
    text = decode(raw).replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    if not text.startswith("MSH"):
        raise Hl7Error("AR", "MSH", 1, 0, E_SEGMENT_SEQUENCE,
                       "MSH segment missing: a message starts with MSH")
    try:
        msg = hl7.parse(text)
        msh = msg.segment("MSH")
    except Exception as exc:  # python-hl7 raises ParseException, KeyError, IndexError
        raise Hl7Error("AR", "MSH", 1, 0, E_SEGMENT_SEQUENCE,
                       f"unparseable message: {exc}") from exc
    base = header_of(text)
    if not base.control_id:
        raise Hl7Error("AR", "MSH", 1, 10, E_REQUIRED, "MSH-10 (message control id) is empty")
    mtype, event = _field(msh, 9, 1), _field(msh, 9, 2)
    if mtype != "ORU":
        raise Hl7Error("AR", "MSH", 1, 9, E_MESSAGE_TYPE,
                       f"MSH-9 message type {mtype or '(empty)'} is not supported: send ORU^R01")
    if event != "R01":
        raise Hl7Error("AR", "MSH", 1, 9, E_EVENT_CODE,
                       f"MSH-9 trigger event {event or '(empty)'} is not supported: send ORU^R01")
    if base.version not in SUPPORTED_VERSIONS:
        raise Hl7Error("AR", "MSH", 1, 12, E_VERSION,
                       f"MSH-12 version {base.version or '(empty)'} is not supported "
                       f"({', '.join(SUPPORTED_VERSIONS)})")
    if not base.sending_facility:
        raise Hl7Error("AE", "MSH", 1, 4, E_REQUIRED, "MSH-4 (sending facility) is empty")
    header = Header(**{**base.__dict__, "message_type": "ORU^R01",
                       "message_at": hl7_time(str(_field(msh, 7, 1)), "MSH", 1, 7)})
    parsed = ParsedOru(header)
    orc: hl7.Segment | None = None
    obr_seq = 0
    patient = ("", "")
    texts: list[list[str]] = []
    for segment in msg:
        name = str(segment[0])
        if name == "PID":
            patient = (_field(segment, 3, 1).strip()[:64],
                       _field(segment, 3, 4).split("&")[0].strip()[:64])
        elif name == "ORC":
            orc = segment
        elif name == "OBR":
            obr_seq += 1
            fact = _report(segment, orc, obr_seq, base.control_id)
            parsed.reports.append(replace(fact, patient_id=patient[0],
                                          patient_id_issuer=patient[1]))
            texts.append([])
            orc = None
        elif name == "OBX" and texts:
            texts[-1].append(_observation(segment))
    if not parsed.reports:
        raise Hl7Error("AE", "OBR", 1, 0, E_SEGMENT_SEQUENCE,
                       "OBR segment missing: an ORU^R01 needs one OBR per report")
    parsed.reports = [replace(r, text="\n".join(t for t in lines if t)[:MAX_REPORT_TEXT])
                      for r, lines in zip(parsed.reports, texts, strict=True)]
    return parsed


def _observation(obx: hl7.Segment) -> str:
    """The text of one OBX: OBX-5, every repetition (TX and FT lines), `~` and the escape
    sequences of a line break taken as line breaks."""
    try:
        value = obx[5]
    except IndexError:
        return ""
    text = str(value).replace("~", "\n")  # a literal ~ in the text is sent escaped (\\R\\)
    return text.replace("\\.br\\", "\n").replace("\\X0D\\\\X0A\\", "\n").strip()


def _report(obr: hl7.Segment, orc: hl7.Segment | None, seq: int, control_id: str) -> ReportFact:
    """One OBR: accession from OBR-3, then OBR-2, then ORC-3, then ORC-2."""
    candidates = [("OBR-3", obr, 3), ("OBR-2", obr, 2)]
    if orc is not None:
        candidates += [("ORC-3", orc, 3), ("ORC-2", orc, 2)]
    accession, where = "", ""
    for label, seg, n in candidates:
        value = str(_field(seg, n, 1)).strip()
        if value:
            accession, where = value, label
            break
    if not accession:
        raise Hl7Error("AE", "OBR", seq, 3, E_REQUIRED,
                       "no accession: OBR-3, OBR-2, ORC-3 and ORC-2 are all empty")
    if len(accession) > 64:
        seg_name, field_no = where.split("-")
        raise Hl7Error("AE", seg_name, seq, int(field_no), E_DATA_TYPE,
                       f"{where} accession longer than 64 characters")
    status = str(_field(obr, 25, 1)).strip().upper()
    if not status:
        raise Hl7Error("AE", "OBR", seq, 25, E_REQUIRED,
                       "OBR-25 (result status) is empty: P, F or C")
    if status not in RESULT_STATUSES:
        raise Hl7Error("AE", "OBR", seq, 25, E_TABLE_VALUE,
                       f"OBR-25 result status {status} is not a report completion: P, F or C")
    filler_field = str(_field(obr, 20, 1)).strip()
    filler_ns = str(_field(obr, 3, 2)).strip()
    filler = str(_field(obr, 3, 1)).strip()
    reference = filler_field or (f"{filler}^{filler_ns}" if filler and filler_ns else filler)
    return ReportFact(
        accession=accession, accession_field=where,
        report_reference=(reference or control_id)[:128], result_status=status,
        observed_at=hl7_time(str(_field(obr, 7, 1)), "OBR", seq, 7),
        results_at=hl7_time(str(_field(obr, 22, 1)), "OBR", seq, 22),
        sequence=seq,
    )


def _field(segment: hl7.Segment, field_no: int, component: int = 1) -> str:
    """Field `field_no`, first repetition, component `component`; empty when absent."""
    try:
        return str(segment.extract_field(1, field_no, 1, component))
    except (IndexError, KeyError):
        return ""


def hl7_time(value: str, segment: str, seq: int, field_no: int) -> datetime | None:
    """HL7 TS/DTM `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`; without an offset, UTC."""
    value = value.strip()
    if not value:
        return None
    m = _TS.match(value)
    if m is None:
        raise Hl7Error("AE", segment, seq, field_no, E_DATA_TYPE,
                       f"{segment}-{field_no} is not an HL7 date/time: {value[:40]!r}")
    y, mo, d, h, mi, s, frac, sign, oh, om = m.groups()
    tz = UTC
    if sign:
        delta = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(delta if sign == "+" else -delta)
    try:
        return datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0),
                        int(s or 0), int((frac or "0").ljust(6, "0")[:6]), tzinfo=tz)
    except ValueError as exc:
        raise Hl7Error("AE", segment, seq, field_no, E_DATA_TYPE,
                       f"{segment}-{field_no} is not a valid date/time: {value[:40]!r}") from exc
