"""The official report's text at rest: sealed (AES-GCM, sidecar_core/secret_box.py) for its own
`legacy_reports` row, opened for a draft's prior reports. Kept apart from legacy_reports.py so
the LLM context builder opens texts without seeing the study domain."""

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
