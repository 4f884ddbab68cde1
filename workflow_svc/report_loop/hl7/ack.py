"""HL7 v2 acknowledgements: original mode (MSA AA/AE/AR) and enhanced mode (CA/CE/CR + AA/AE/AR)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from workflow_svc.report_loop.hl7.message import Header, Hl7Error

APP = "SIDECAR"


@dataclass(frozen=True)
class Verdict:
    """What became of a message: the application code (AA/AE/AR) and, for errors, why."""

    code: str
    text: str = ""
    error: Hl7Error | None = None
    committed: bool = True  # the raw message is in safe storage


def acks_for(header: Header, verdict: Verdict) -> list[bytes]:
    """The ACK messages to send back on the connection, in order (possibly none).

    Original mode (MSH-15 and MSH-16 empty): one ACK with MSA-1 AA, AE or AR.
    Enhanced mode: a commit ACK (CA; CR when the header is rejected; CE when the message could
    not be stored) as MSH-15 asks (AL always, NE never, ER on error, SU on success; empty = AL),
    then an application ACK with AA/AE/AR as MSH-16 asks (empty = NE), on the same connection.
    """
    if not header.enhanced:
        return [build_ack(header, verdict.code, verdict.text, verdict.error)]
    out: list[bytes] = []
    if verdict.code == "AR":
        commit = "CR"
    elif not verdict.committed:
        commit = "CE"
    else:
        commit = "CA"
    if _wanted(header.accept_ack_type or "AL", commit == "CA"):
        text = verdict.text if commit != "CA" else ""
        out.append(build_ack(header, commit, text, verdict.error if commit != "CA" else None))
    if commit == "CA" and _wanted(header.application_ack_type or "NE", verdict.code == "AA"):
        out.append(build_ack(header, verdict.code, verdict.text, verdict.error))
    return out


def _wanted(condition: str, success: bool) -> bool:
    """HL7 table 0155: AL always, NE never, ER error/reject only, SU successful only."""
    condition = condition.upper()
    return condition == "AL" or (condition == "ER" and not success) or (
        condition == "SU" and success)


def build_ack(header: Header, code: str, text: str = "", error: Hl7Error | None = None) -> bytes:
    """One ACK message (segments separated by CR) answering `header`."""
    version = header.version or "2.5.1"
    modern = version not in ("2.3", "2.3.1")
    msh = [
        "MSH", "^~\\&", APP, APP, _esc(header.sending_application),
        _esc(header.sending_facility), datetime.now(UTC).strftime("%Y%m%d%H%M%S"), "",
        "ACK^R01^ACK" if modern else "ACK^R01", uuid.uuid4().hex[:20], "P", version,
    ]
    if header.enhanced:
        msh += ["", "", "NE", "NE"]  # an acknowledgement is never acknowledged
    segments = ["|".join(msh), "|".join(["MSA", code, _esc(header.control_id),
                                         _esc(text[:80])])]
    if error is not None:
        segments.append(_err(error, version))
    return ("\r".join(segments) + "\r").encode("utf-8")


def _err(error: Hl7Error, version: str) -> str:
    """ERR naming the segment and field: ERR-1 before v2.5, ERR-2/3/4 from v2.5 on."""
    code, name = error.condition
    location = f"{error.segment}^{error.sequence}^{error.field_no or ''}"
    if version in ("2.3", "2.3.1", "2.4"):
        return f"ERR|{location}^^{code}&{_esc_sub(name)}&HL70357"
    return (f"ERR||{location}|{code}^{_esc(name)}^HL70357|E||||"
            f"{_esc(error.text[:250])}")


def _esc(value: str) -> str:
    """HL7 escaping of the default delimiters."""
    return (value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", " ").replace("\n", " "))


def _esc_sub(value: str) -> str:
    return _esc(value)
