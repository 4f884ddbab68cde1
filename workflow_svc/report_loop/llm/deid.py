"""De-identification before anything leaves the sidecar (modelled on DICOM PS3.15 Annex E)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

# The profile's version, traced with every draft (llm_traces.deid_profile, drafts.context):
# /1 scrubbed exact identifiers; /2 reads them from what ingest stores, matches every name
# component of every PN group case- and accent-insensitively, and shifts dates in free text.
PROFILE = "sidecar-deid/2"
# PS3.15 Basic Application Level Confidentiality Profile, with the Retain Patient
# Characteristics Option (sex, age) and the Clean Descriptors Option (free text scrubbed).
REMOVED = "[REMOVED]"
SEXES = ("M", "F", "O")  # PatientSex is an allow-listed value, anything else is dropped

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
# Dates whose day, month and year are unambiguous are shifted; the rest become [DATE].
_SHIFTED_DATES = [
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})(?P<m>\d{2})(?P<d>\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(?P<d>\d{1,2})(?:st|nd|rd|th)?[\s-]+" + _MONTH
               + r"[\s,-]+(?P<y>(?:19|20)\d{2})(?!\d)", re.IGNORECASE),
    re.compile(r"\b" + _MONTH + r"\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>(?:19|20)\d{2})"
               r"(?!\d)", re.IGNORECASE),
]
_OTHER_DATES = [
    re.compile(r"(?<!\d)\d{1,2}[./-]\d{1,2}[./-](?:19|20)?\d{2}(?!\d)"),
    re.compile(r"\b" + _MONTH + r"\s+(?:19|20)\d{2}(?!\d)", re.IGNORECASE),
]
_UID = re.compile(r"(?<![\d.])\d+(?:\.\d+){3,}(?![\d.])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\bhttps?://\S+", re.IGNORECASE)
# A phone number: optional + or 00, then digits with spaces, brackets, slashes or dashes
# between them (never a decimal point, so measurements stay), seven digits at least.
_PHONE = re.compile(r"(?<![\w.])(?:\+|00)?\(?\d[\d\s()/-]{5,}\d(?![\w.])")
_DOTTED_PHONE = re.compile(r"(?<![\w.])\d{2,4}\.\d{3}\.\d{3,4}(?![\w.])")
_LONG_NUMBER = re.compile(r"\b[A-Z]{0,4}\d{5,}\b", re.IGNORECASE)
_HELD = re.compile("\ue000(\\d+)\ue001")
# Letters NFKD does not decompose into a base letter and a mark.
_FOLD = str.maketrans({"ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe",
                       "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "þ": "th",
                       "ı": "i", "ß": "ss", "’": "'"})
_NAME_SPLIT = re.compile(r"[\s\-'.,]+")


def fold(text: str) -> str:
    """Case- and accent-free text for matching (Müller, MÜLLER and Muller fold alike)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _folded_with_index(text: str) -> tuple[str, list[int]]:
    """`fold(text)` and, for each of its characters, the index of the character it came from."""
    out: list[str] = []
    index: list[int] = []
    for i, char in enumerate(text):
        folded = fold(char)
        out.append(folded)
        index.extend([i] * len(folded))
    return "".join(out), index


def _pattern(identifier: str) -> re.Pattern[str] | None:
    """How one folded identifier is found: as a whole word where it is written in Latin
    letters and digits, anywhere where it is in a script without spaces between words."""
    folded = fold(identifier).strip()
    if not folded:
        return None
    if folded.isascii():
        if len(folded) < 2:
            return None  # initials are left; one letter identifies nobody
        return re.compile(r"(?<!\w)" + re.escape(folded) + r"(?!\w)")
    return re.compile(re.escape(folded))


def person_name_groups(value: Any) -> list[str]:
    """The component groups (alphabetic, ideographic, phonetic) of a PN as ingest stores it:
    DICOM JSON {"Alphabetic": …}, a decoded string with '=' between groups, or a list of
    either (a multi-valued PN)."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [g for v in value for g in person_name_groups(v)]
    if isinstance(value, Mapping):
        return [str(value[k]) for k in ("Alphabetic", "Ideographic", "Phonetic") if value.get(k)]
    return [g for g in str(value).split("=") if g]


def name_parts(person_name: Any) -> list[str]:
    """The family, given and middle components of every group of a PN (family^given^middle^
    prefix^suffix; a prefix such as "Dr" names nobody), each also split at spaces, hyphens and
    apostrophes (Smith-Jones, van der Berg, O'Brien)."""
    parts: list[str] = []
    for group in person_name_groups(person_name):
        for component in group.split("^")[:3]:
            component = component.strip()
            if not component:
                continue
            parts.append(component)
            parts.extend(p for p in _NAME_SPLIT.split(component) if p and p != component)
    return list(dict.fromkeys(parts))


def identifiers_of(attributes: Mapping[str, Any]) -> list[str]:
    """What must never leave in free text, from a study's stored DICOM attributes
    (`studies.dicom_attributes`): the patient's and referring physician's names, patient and
    other IDs, the accession number, the study ID and the institution."""
    out: list[str] = []
    for keyword in ("PatientName", "OtherPatientNames", "ReferringPhysicianName"):
        out.extend(name_parts(attributes.get(keyword)))
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID",
                    "InstitutionName", "IssuerOfPatientID"):
        value = attributes.get(keyword)
        values = value if isinstance(value, list) else [value]
        out.extend(str(v).strip() for v in values if v not in (None, ""))
    return [i for i in dict.fromkeys(out) if i]


@dataclass
class Deidentifier:
    """One study's de-identification: a fixed date shift and the identifiers to scrub. `text`
    is the one scrubber of every free-text field that leaves the sidecar (descriptions, the
    radiologist's wording, report text, chat)."""

    study_key: str
    identifiers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        patterns = {p.pattern: p for i in sorted(self.identifiers, key=len, reverse=True)
                    if (p := _pattern(i)) is not None}
        self._patterns = list(patterns.values())

    @classmethod
    def for_study(cls, study_key: str, attributes: Mapping[str, Any],
                  extra: Iterable[str] = ()) -> Deidentifier:
        return cls(study_key, [*identifiers_of(attributes), *(e for e in extra if e)])

    @property
    def shift_days(self) -> int:
        """Between -365 and -1 days, fixed per study (the same draft always shifts alike)."""
        digest = hashlib.sha256(f"{PROFILE}:{self.study_key}".encode()).digest()
        return -(1 + int.from_bytes(digest[:4], "big") % 365)

    def date(self, value: date | None) -> str:
        return (value + timedelta(days=self.shift_days)).isoformat() if value else ""

    def _shift_match(self, m: re.Match[str]) -> str:
        groups = m.groupdict()
        month = (int(groups["m"]) if groups.get("m")
                 else _MONTHS.index(groups["mon"].lower()[:3]) + 1)
        try:
            return self.date(date(int(groups["y"]), month, int(groups["d"])))
        except ValueError:
            return "[DATE]"

    def names(self, value: str) -> str:
        """`value` with every identifier removed, whatever its case and accents."""
        if not self._patterns or not value:
            return value
        folded, index = _folded_with_index(value)
        spans: list[tuple[int, int]] = []
        for pattern in self._patterns:
            for m in pattern.finditer(folded):
                if m.end() > m.start():
                    spans.append((index[m.start()], index[m.end() - 1] + 1))
        if not spans:
            return value
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out = value
        for start, end in reversed(merged):
            out = out[:start] + REMOVED + out[end:]
        return out

    def text(self, value: str) -> str:
        """Free text with names, IDs, UIDs, e-mail addresses, URLs and phone numbers removed
        and dates shifted by the study's shift (ambiguous ones removed)."""
        out = unicodedata.normalize("NFC", value).replace("\ue000", "").replace("\ue001", "")
        out = _EMAIL.sub(REMOVED, out)
        out = _URL.sub(REMOVED, out)
        out = self.names(out)
        out = _UID.sub("[UID]", out)
        dates: list[str] = []  # shifted dates wait behind placeholders, out of the number rules

        def hold(replacement: str) -> str:
            dates.append(replacement)
            return f"\ue000{len(dates) - 1}\ue001"

        for pattern in _SHIFTED_DATES:
            out = pattern.sub(lambda m: hold(self._shift_match(m)), out)
        for pattern in _OTHER_DATES:
            out = pattern.sub(lambda m: hold("[DATE]"), out)
        out = _DOTTED_PHONE.sub(REMOVED, out)
        out = _PHONE.sub(lambda m: REMOVED if sum(c.isdigit() for c in m.group()) >= 7
                         else m.group(), out)
        out = _LONG_NUMBER.sub("[ID]", out)
        return _HELD.sub(lambda m: dates[int(m.group(1))], out)


def sex(value: Any) -> str:
    """PatientSex as an allow-listed value (M, F, O), else empty."""
    text = str(value or "").strip().upper()
    return text if text in SEXES else ""


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
