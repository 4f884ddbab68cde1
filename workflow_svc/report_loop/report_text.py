"""Report text at rest: the official report's text, sealed (AES-GCM, sidecar_core/secret_box.py)
for its own `legacy_reports` row and opened for a draft's prior reports, and each HL7 message as
received (`hl7_messages.raw`: PID names and OBX text), sealed for its own row. Kept apart from
legacy_reports.py so the LLM context builder opens texts without seeing the study domain."""

from __future__ import annotations

import logging
import uuid

from sidecar_core.secret_box import SecretBox

log = logging.getLogger(__name__)


def text_context(report_id: uuid.UUID) -> str:
    """The associated data of a report's sealed text: it opens only in its own row."""
    return f"legacy_report:{report_id}:report_text"


def seal_text(box: SecretBox | None, report_id: uuid.UUID, text: str) -> bytes | None:
    """The report text sealed for its row (AES-GCM), or None: no text, or no key (then the
    text is not kept, never kept in plaintext)."""
    if not text:
        return None
    if box is None:
        log.warning("report text of %s not kept: no secret key is configured", report_id)
        return None
    return box.seal(text, text_context(report_id)).encode()


def open_text(box: SecretBox, report_id: uuid.UUID, sealed: bytes | None) -> str:
    """The plaintext of `seal_text`; SecretKeyError when it does not open."""
    return box.open(bytes(sealed).decode(), text_context(report_id)) if sealed else ""


def message_context(message_id: uuid.UUID) -> str:
    """The associated data of a sealed HL7 message: it opens only in its own row."""
    return f"hl7_message:{message_id}:raw"


def _header_only(raw: bytes) -> bytes:
    """The MSH segment alone (who sent it, its control ID and type: no patient data)."""
    end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
    return raw[:end]


def seal_message(box: SecretBox | None, message_id: uuid.UUID, raw: bytes) -> bytes:
    """An HL7 message as it is kept: sealed for its row; without a key only its MSH segment
    (the rest, patient and report text, is not kept in plaintext). The bytes go through
    latin-1, which maps every byte to one character, so any charset comes back exact."""
    if box is None:
        return _header_only(raw)
    return box.seal(raw.decode("latin-1"), message_context(message_id)).encode()


def open_message(box: SecretBox, message_id: uuid.UUID, kept: bytes) -> bytes:
    """The message as received, from `seal_message` (a message kept before sealing, or without
    a key, comes back as it is kept); SecretKeyError when it does not open."""
    return box.open(bytes(kept).decode("latin-1"), message_context(message_id)).encode("latin-1")
