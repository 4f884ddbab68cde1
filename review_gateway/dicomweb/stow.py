"""STOW-RS as pure functions: parse a multipart/related request, build the PS3.18 response."""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom

from sidecar_core.dicom.dicom_json import dataset, element

DICOM = "application/dicom"
# FailureReason (0008,1197) values (PS3.18 I.2 / PS3.4 B.2.3)
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
_IDENTITY_REASONS = {"MISSING_STUDY_INSTANCE_UID", "MISSING_SERIES_INSTANCE_UID",
                     "MISSING_SOP_INSTANCE_UID", "MISSING_SOP_CLASS_UID", "INVALID_UID",
                     "SOP_INSTANCE_MISMATCH", "INVALID_ACCESSION", "STUDY_INSTANCE_UID_MISMATCH"}
_TOKEN = re.compile(r'\s*([^=;\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?\s*(?:;|$)')


class StowError(Exception):
    """The request as a whole is refused: `status` is 400 (malformed) or 415 (media type)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PartIdentity:
    """What a part says it is (read from its header only); empty strings when unreadable."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""


@dataclass(frozen=True)
class PartResult:
    identity: PartIdentity
    stored: bool  # STORED or DUPLICATE: present in the store afterwards
    failure_reason: int = 0
    message: str = ""


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; a=b; c="d"` -> ("type/subtype", {"a": "b", "c": "d"})."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _TOKEN.finditer(rest):
        if match.group(0).strip():
            raw = (match.group(2) or "").strip()
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[match.group(1).lower()] = raw
    return media.strip().lower(), params


def split_request(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a STOW-RS request body, in order."""
    media, params = parse_media_type(content_type or "")
    if media != "multipart/related":
        raise StowError(415, f"expected multipart/related; type=\"{DICOM}\", got {media or '-'}")
    root_type = params.get("type", "").lower()
    if root_type and root_type != DICOM:
        raise StowError(415, f"only type=\"{DICOM}\" parts are accepted, not {root_type}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise StowError(400, "the multipart/related content type has no boundary")
    parts = split_multipart(body, boundary.encode("latin-1"))
    if not parts:
        raise StowError(400, "the request holds no parts")
    out = []
    for headers, content in parts:
        part_type, _ = parse_media_type(headers.get("content-type", DICOM))
        if part_type != DICOM:
            raise StowError(415, f"part of type {part_type}; only {DICOM} is accepted")
        out.append(content)
    return out


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """RFC 2046 body parts as (lower-cased headers, content); StowError(400) when malformed."""
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:  # a preamble (possibly empty) precedes the first delimiter
        first = body.find(b"\r\n" + delimiter)
        if first < 0:
            raise StowError(400, "the multipart boundary does not occur in the body")
        pos = first + 2 + len(delimiter)
    parts: list[tuple[dict[str, str], bytes]] = []
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise StowError(400, "malformed multipart delimiter line")
        nxt = body.find(b"\r\n" + delimiter, line_end + 2)
        if nxt < 0:
            raise StowError(400, "the multipart body has no closing boundary")
        parts.append(_part(body[line_end + 2:nxt]))
        pos = nxt + 2 + len(delimiter)


def _part(raw: bytes) -> tuple[dict[str, str], bytes]:
    if raw.startswith(b"\r\n"):
        return {}, raw[2:]
    head, sep, content = raw.partition(b"\r\n\r\n")
    if not sep:
        raise StowError(400, "a multipart part has no header/body separator")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise StowError(400, "malformed header line in a multipart part")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return headers, content


def identify(part: bytes) -> PartIdentity:
    """Reads only the identifying attributes; never raises."""
    try:
        ds = pydicom.dcmread(BytesIO(part), stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                            "SeriesInstanceUID"])
        return PartIdentity(*(str(ds.get(k, "") or "").strip("\x00 ")[:64] for k in (
            "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")))
    except Exception:
        return PartIdentity()


def failure_reason(reason: str) -> int:
    """FailureReason for an UPPER_SNAKE rejection reason of the Ingest RPC."""
    if reason in _IDENTITY_REASONS:
        return DATASET_DOES_NOT_MATCH_SOP_CLASS
    if reason == "OBJECT_TOO_LARGE":
        return OUT_OF_RESOURCES
    if reason in ("NOT_DICOM", ""):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


def http_status(results: list[PartResult]) -> int:
    """200 all stored, 202 some failed, 409 all failed (PS3.18 10.5.3)."""
    failed = sum(not r.stored for r in results)
    return 200 if failed == 0 else 409 if failed == len(results) else 202


def response(results: list[PartResult], base_url: str,
             study_instance_uid: str = "") -> dict[str, Any]:
    """The Store Instances Response Module as DICOM JSON."""
    def url(*uids: str) -> str:
        levels = ("studies", "series", "instances")
        return base_url + "".join(f"/{lvl}/{uid}" for lvl, uid in zip(levels, uids, strict=False))

    stored = [r.identity for r in results if r.stored]
    studies = {i.study_instance_uid for i in stored}
    study = study_instance_uid or (studies.pop() if len(studies) == 1 else "")
    body: dict[str, Any] = {}
    if study:
        body.update([element("RetrieveURL", url(study))])
    referenced = [dataset({"ReferencedSOPClassUID": i.sop_class_uid,
                           "ReferencedSOPInstanceUID": i.sop_instance_uid,
                           "RetrieveURL": url(i.study_instance_uid, i.series_instance_uid,
                                              i.sop_instance_uid)}) for i in stored]
    failed = [dataset({"ReferencedSOPClassUID": r.identity.sop_class_uid,
                       "ReferencedSOPInstanceUID": r.identity.sop_instance_uid,
                       "FailureReason": r.failure_reason})
              for r in results if not r.stored]
    if referenced:
        body.update([element("ReferencedSOPSequence", referenced)])
    if failed:
        body.update([element("FailedSOPSequence", failed)])
    return dict(sorted(body.items()))
