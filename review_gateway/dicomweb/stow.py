"""STOW-RS as pure functions: parse a multipart/related request, build the PS3.18 response."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

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


def request_boundary(content_type: str) -> bytes:
    """The boundary of a STOW-RS request's multipart/related body; StowError 415 or 400."""
    media, params = parse_media_type(content_type or "")
    if media != "multipart/related":
        raise StowError(415, f"expected multipart/related; type=\"{DICOM}\", got {media or '-'}")
    root_type = params.get("type", "").lower()
    if root_type and root_type != DICOM:
        raise StowError(415, f"only type=\"{DICOM}\" parts are accepted, not {root_type}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise StowError(400, "the multipart/related content type has no boundary")
    return boundary.encode("latin-1")


def split_request(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a whole STOW-RS request body, in order."""
    reader = MultipartReader(request_boundary(content_type), io.BytesIO, len(body) + 1,
                             dicom_only=True)
    reader.feed(body)
    reader.finish()
    if not reader.completed:
        raise StowError(400, "the request holds no parts")
    return [part.read() for part in reader.completed]


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """RFC 2046 body parts as (lower-cased headers, content); StowError(400) when malformed."""
    reader = MultipartReader(boundary, io.BytesIO, len(body) + 1)
    reader.feed(body)
    reader.finish()
    return [(part.headers, part.read()) for part in reader.completed]


@dataclass
class SpooledPart:
    """One body part as received: its headers and its content in `file` (a spool: memory up to a
    small size, then an unnamed file on disk); `too_large` when it passed the part limit (then
    only its first bytes, enough to identify it, are kept)."""

    index: int
    headers: dict[str, str]
    file: BinaryIO
    size: int = 0
    too_large: bool = False

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def close(self) -> None:
        self.file.close()


class MultipartReader:
    """An incremental RFC 2046 parser: `feed` it the body as it arrives; each part's content goes
    to a file of its own (`new_file()`) as it is read, never to one buffer of the whole body.
    Completed parts collect in `completed` (the caller takes them away); StowError 400 when the
    body is malformed, 415 for a part that is not application/dicom (`dicom_only`)."""

    _HEADER_LIMIT = 16 * 1024
    _PREAMBLE_LIMIT = 64 * 1024
    IDENTIFY_BYTES = 64 * 1024  # what is kept of a part over the limit

    def __init__(self, boundary: bytes, new_file: Callable[[], BinaryIO], max_part_bytes: int,
                 *, dicom_only: bool = False) -> None:
        self.separator = b"\r\n--" + boundary
        self.new_file = new_file
        self.max_part_bytes = max_part_bytes
        self.dicom_only = dicom_only
        self.buf = bytearray(b"\r\n")  # so that a body opening with the delimiter is found
        self.state = "preamble"
        self.skipped = 0
        self.current: SpooledPart | None = None
        self.completed: list[SpooledPart] = []
        self.parts = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._step():
            pass

    def finish(self) -> None:
        """The body ended: StowError(400) unless its closing delimiter was read."""
        if self.state == "preamble":
            raise StowError(400, "the multipart boundary does not occur in the body")
        if self.state != "epilogue":
            raise StowError(400, "the multipart body has no closing boundary")

    def close(self) -> None:
        """Drops every spool still held (the part being read and those not taken away)."""
        for part in [*self.completed, *([self.current] if self.current else [])]:
            part.close()
        self.completed.clear()
        self.current = None

    def _step(self) -> bool:
        """Consumes what it can of the buffer; False when it needs more data."""
        buf, sep = self.buf, self.separator
        if self.state == "preamble":
            at = buf.find(sep)
            if at < 0:
                keep = len(sep) - 1
                if len(buf) > keep:
                    self.skipped += len(buf) - keep
                    del buf[:len(buf) - keep]
                if self.skipped > self._PREAMBLE_LIMIT:
                    raise StowError(400, "the multipart boundary does not occur in the body")
                return False
            del buf[:at + len(sep)]
            self.state = "delimiter"
            return True
        if self.state == "delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self.state = "epilogue"
                return True
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 1024:
                    raise StowError(400, "malformed multipart delimiter line")
                return False
            if bytes(buf[:end]).strip(b" \t"):
                raise StowError(400, "malformed multipart delimiter line")
            del buf[:end + 2]
            self.state = "headers"
            return True
        if self.state == "headers":
            return self._headers()
        if self.state == "body":
            return self._body()
        buf.clear()  # the epilogue is ignored
        return False

    def _headers(self) -> bool:
        buf = self.buf
        if len(buf) < 2:
            return False
        if buf[:2] == b"\r\n":
            headers: dict[str, str] = {}
            del buf[:2]
        else:
            end = buf.find(b"\r\n\r\n")
            next_part = buf.find(self.separator)
            if end < 0 or 0 <= next_part < end:
                if next_part >= 0 or len(buf) > self._HEADER_LIMIT:
                    raise StowError(400, "a multipart part has no header/body separator")
                return False
            headers = {}
            for line in bytes(buf[:end]).split(b"\r\n"):
                name, colon, value = line.partition(b":")
                if not colon:
                    raise StowError(400, "malformed header line in a multipart part")
                headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
            del buf[:end + 4]
        if self.dicom_only:
            part_type, _ = parse_media_type(headers.get("content-type", DICOM))
            if part_type != DICOM:
                raise StowError(415, f"part of type {part_type}; only {DICOM} is accepted")
        self.current = SpooledPart(self.parts, headers, self.new_file())
        self.parts += 1
        self.state = "body"
        return True

    def _body(self) -> bool:
        buf, sep = self.buf, self.separator
        at = buf.find(sep)
        if at < 0:
            keep = len(sep) - 1
            if len(buf) > keep:
                self._write(buf[:len(buf) - keep])
                del buf[:len(buf) - keep]
            return False
        self._write(buf[:at])
        del buf[:at + len(sep)]
        assert self.current is not None
        self.completed.append(self.current)
        self.current = None
        self.state = "delimiter"
        return True

    def _write(self, data: bytearray) -> None:
        part = self.current
        assert part is not None
        if not part.too_large and part.size + len(data) > self.max_part_bytes:
            part.too_large = True
            room = max(0, self.IDENTIFY_BYTES - part.size)
            if room:
                part.file.write(data[:room])
            part.file.truncate(min(part.size + room, self.IDENTIFY_BYTES))
        elif not part.too_large:
            part.file.write(data)
        part.size += len(data)


def identify(part: bytes | BinaryIO) -> PartIdentity:
    """Reads only the identifying attributes; never raises."""
    try:
        if isinstance(part, bytes | bytearray):
            part = io.BytesIO(part)
        part.seek(0)
        ds = pydicom.dcmread(part, stop_before_pixels=True, force=True,
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
