"""Per-facility settings of the report loop: HL7 sender, handoff webhook, LLM, PACS export."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists, InvalidArgument, NotFound
from sidecar_core.store.models import Facility

EXPORT_REJECTED = ("omit", "include")  # rejected findings: left out of the SR, or kept as such


def _http_url(value: str, reason: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(reason, f"not an http(s) URL: {value!r}")
    return value


async def update_report_settings(db: Database, name: str, **given: Any) -> dict[str, Any]:
    """Changes the given settings (None = unchanged, "" = cleared); returns them all."""
    values: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        if key == "hl7_sending_facility" and len(value) > 64:
            raise InvalidArgument("INVALID_HL7_FACILITY", "MSH-4 value over 64 characters")
        if key == "handoff_url" and value:
            _http_url(value, "INVALID_HANDOFF_URL")
        if key == "llm_base_url" and value:
            _http_url(value, "INVALID_LLM_URL")
        if key == "llm_timeout_s" and not 0 < value <= 600:
            raise InvalidArgument("INVALID_LLM_TIMEOUT", "LLM timeout must be 0..600 s")
        if key == "pacs_ae_title" and value and not 0 < len(value) <= 16:
            raise InvalidArgument("INVALID_AE_TITLE", "AE title must be 1 to 16 characters")
        if key == "pacs_port" and not 0 < value < 65536:
            raise InvalidArgument("INVALID_PORT", "PACS port must be 1..65535")
        if key == "export_rejected" and value not in EXPORT_REJECTED:
            raise InvalidArgument("INVALID_EXPORT_REJECTED", "export-rejected: omit or include")
        values[key] = value if value != "" else None
    try:
        async with db.unit_of_work() as s:
            if values:
                await s.execute(update(Facility).where(Facility.name == name).values(**values))
            row = (await s.execute(select(Facility).where(Facility.name == name))
                   ).scalar_one_or_none()
    except IntegrityError as exc:
        raise AlreadyExists("HL7_FACILITY_TAKEN", "that MSH-4 value belongs to another "
                            "facility") from exc
    if row is None:
        raise NotFound("FACILITY_NOT_FOUND", f"no facility {name!r}", facility=name)
    return {
        "hl7_sending_facility": row.hl7_sending_facility, "handoff_url": row.handoff_url,
        "handoff_signed": bool(row.handoff_secret), "llm_base_url": row.llm_base_url,
        "llm_model": row.llm_model, "llm_timeout_s": row.llm_timeout_s,
        "pacs": (f"{row.pacs_ae_title}@{row.pacs_host}:{row.pacs_port}"
                 if row.pacs_host else None), "export_rejected": row.export_rejected,
    }
