"""De-identification before anything leaves the sidecar (modelled on DICOM PS3.15 Annex E)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

PROFILE = "sidecar-deid/1"
# PS3.15 Basic Application Level Confidentiality Profile, with the Retain Patient
# Characteristics Option (sex, age) and the Clean Descriptors Option (free text scrubbed).
REMOVED = "[REMOVED]"
_DATE_PATTERNS = [
    re.compile(r"\b(19|20)\d{2}-\d{1,2}-\d{1,2}\b"),
    re.compile(r"\b(19|20)\d{6}\b"),
    re.compile(r"\b\d{1,2}[./]\d{1,2}[./](19|20)?\d{2}\b"),
]
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
_LONG_NUMBER = re.compile(r"\b[A-Z]{0,4}\d{5,}\b", re.IGNORECASE)


@dataclass
class Deidentifier:
    """One study's de-identification: a fixed date shift and the identifiers to scrub."""

    study_key: str
    identifiers: list[str] = field(default_factory=list)

    @property
    def shift_days(self) -> int:
        """Between -365 and -1 days, fixed per study (the same draft always shifts alike)."""
        digest = hashlib.sha256(f"{PROFILE}:{self.study_key}".encode()).digest()
        return -(1 + int.from_bytes(digest[:4], "big") % 365)

    def date(self, value: date | None) -> str:
        return (value + timedelta(days=self.shift_days)).isoformat() if value else ""

    def text(self, value: str) -> str:
        """Free text with names, IDs, UIDs, dates, e-mail addresses and phone numbers removed."""
        out = value
        for ident in sorted({i for i in self.identifiers if len(i) >= 2}, key=len, reverse=True):
            out = re.sub(re.escape(ident), REMOVED, out, flags=re.IGNORECASE)
        out = _UID.sub("[UID]", out)
        out = _EMAIL.sub(REMOVED, out)
        for pattern in _DATE_PATTERNS:
            out = pattern.sub("[DATE]", out)
        out = _PHONE.sub(REMOVED, out)
        return _LONG_NUMBER.sub("[ID]", out)


def age_band(age: str, birth: date | None, on: date | None) -> str:
    """DICOM age (e.g. 064Y) or birth date → years; 90 and over become '90+'."""
    years: int | None = None
    m = re.fullmatch(r"(\d{3})([DWMY])", age.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        years = n if unit == "Y" else 0
    elif birth and on:
        years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years is None:
        return ""
    return "90+" if years >= 90 else str(years)


def name_parts(person_name: str) -> list[str]:
    """The components of a DICOM PN (family^given^middle^prefix^suffix, any group)."""
    parts = re.split(r"[\^=]", person_name)
    return [p.strip() for p in parts if len(p.strip()) >= 2]
