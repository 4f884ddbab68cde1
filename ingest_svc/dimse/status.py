"""Maps a Receiver result to the documented C-STORE response status (see ingest_svc.dimse.scp)."""

from __future__ import annotations

import re
from io import BytesIO

import pydicom
from pydicom.datadict import dictionary_has_tag, tag_for_keyword
from pydicom.dataset import Dataset

from ingest_svc.study.receive import Outcome, ReceiveResult, StorageFailed

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

# Rejections where the object's identity or a UID is wrong (the dataset does not match what a
# conformant instance of its SOP class must carry): 0xA900 with OffendingElement.
_IDENTITY_REASONS = {
    "MISSING_STUDY_INSTANCE_UID": "StudyInstanceUID",
    "MISSING_SERIES_INSTANCE_UID": "SeriesInstanceUID",
    "MISSING_SOP_INSTANCE_UID": "SOPInstanceUID",
    "MISSING_SOP_CLASS_UID": "SOPClassUID",
    "INVALID_UID": "",  # the attribute is the first word of the message
    "SOP_INSTANCE_MISMATCH": "SOPInstanceUID",
    "SOP_CLASS_MISMATCH": "SOPClassUID",
    "INVALID_ACCESSION": "AccessionNumber",
}
# Rejections for lack of room: 0xA700.
_RESOURCE_REASONS = {"OBJECT_TOO_LARGE"}
_LO_UNSAFE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")  # printable ASCII without backslash


def error_comment(text: str) -> str:
    """An ErrorComment value: LO, so at most 64 printable characters and no backslash."""
    return _LO_UNSAFE.sub("?", text)[:64].rstrip()


def status_dataset(status: int, comment: str = "", offending: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = error_comment(comment)
    if offending:
        tag = tag_for_keyword(offending)
        if tag is not None:
            ds.OffendingElement = [tag]
    return ds


def _offending_keyword(reason: str, message: str) -> str:
    keyword = _IDENTITY_REASONS.get(reason, "")
    if keyword:
        return keyword
    first = message.split(" ", 1)[0]
    return first if tag_for_keyword(first) is not None else ""


def store_status(result: ReceiveResult) -> int | Dataset:
    """STORED and DUPLICATE are 0x0000; a rejection gets 0xA900, 0xA700 or 0xC000 + comment."""
    if result.outcome in (Outcome.STORED, Outcome.DUPLICATE):
        return SUCCESS
    if result.reason in _IDENTITY_REASONS:
        keyword = _offending_keyword(result.reason, result.message)
        text = (f"{keyword} is not a valid UID" if result.reason == "INVALID_UID" and keyword
                else result.message)
        return status_dataset(DATASET_DOES_NOT_MATCH_SOP_CLASS, text, keyword)
    if result.reason in _RESOURCE_REASONS:
        return status_dataset(OUT_OF_RESOURCES, f"{result.reason}: {result.message}")
    return status_dataset(CANNOT_UNDERSTAND, f"{result.reason}: {result.message}")


def has_standard_attribute(data: bytes) -> bool:
    """False when the dataset holds no standard DICOM attribute at all (arbitrary bytes)."""
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True)
        return any(dictionary_has_tag(tag) for tag in ds._dict)  # tags only, values stay raw
    except Exception:
        return False


def rejected_status(result: ReceiveResult, data: bytes) -> int | Dataset:
    """`store_status`, except that bytes with no DICOM attribute at all are 0xC000 NOT_DICOM.

    Over DIMSE the file meta is always well-formed (the SCP builds it), so arbitrary bytes reach
    the parser as a dataset lacking its UIDs; they are reported as not DICOM rather than as an
    instance that misses StudyInstanceUID. Only rejections pay for the extra parse.
    """
    if result.reason.startswith("MISSING_") and not has_standard_attribute(data):
        return status_dataset(CANNOT_UNDERSTAND, "NOT_DICOM: no standard DICOM attribute found")
    return store_status(result)


def failure_status(error: BaseException) -> Dataset:
    """A storage failure (disk full or failing, database unavailable, timeout): 0xA700 with
    what failed (StorageFailed's message names it), retry later."""
    detail = error.short if isinstance(error, StorageFailed) else type(error).__name__
    return status_dataset(OUT_OF_RESOURCES, f"OUT_OF_RESOURCES: {detail}; retry later")
