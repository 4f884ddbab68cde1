"""DICOM UID validation (PS3.5 9.1): digits and dots, no zero-padded component, <= 64 chars."""

from __future__ import annotations

import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def uid_problem(value: str | None) -> str | None:
    """Returns why `value` is not a valid UID, or None when it is."""
    if value is None or value == "":
        return "is empty"
    if len(value) > 64:
        return f"is {len(value)} characters long (at most 64)"
    if not _UID.match(value):
        return "must be digits and dots with no empty or zero-padded component"
    return None


def is_valid_uid(value: str | None) -> bool:
    return uid_problem(value) is None
