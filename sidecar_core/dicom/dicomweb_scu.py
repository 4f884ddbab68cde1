"""QIDO-RS and WADO-RS towards a facility's DICOMweb PACS (its `pacs_dicomweb_url`): the
patient's earlier studies, and the retrieval of one of them as DICOM parts.

Every answer is bounded and checked before anything is believed: its status, its content type,
its size (the QIDO answer, the whole WADO answer, each part), the number of matches and parts,
the JSON's shape, each UID; a match or a part of another patient (or, for WADO-RS, of another
study) is left out and counted. Anything else malformed raises `DicomwebFailed` with a precise
cause; `transient` tells an outage (connection, timeout, 5xx, 429) from an answer that will not
get better by asking again. The caller gives the httpx client (bound to the address the egress
policy checked: `sidecar_core.egress.pinned_client`) and does its own time limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import quote

import httpx
import pydicom
from pydicom.errors import InvalidDicomError

from sidecar_core.dicom.query_scu import FoundStudy
from sidecar_core.dicom.uids import is_valid_uid

DICOM_JSON = ("application/dicom+json", "application/json")
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# what a match must carry besides the defaults: description, modalities, instances, accession,
# patient
INCLUDE = ("00081030", "00080061", "00201208", "00080050", "00100020")
_DATE = re.compile(r"^\d{8}$")
# RFC 7235 token68 after "Bearer " / "Basic ": what an Authorization header value may carry
_TOKEN68 = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DicomwebFailed(Exception):
    """The PACS's DICOMweb answer was refused (or never came); the message says why."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Limits:
    """What the sidecar reads from a DICOMweb PACS at most."""

    qido_bytes: int = 4 * 1024 * 1024  # one QIDO-RS answer
    study_bytes: int = 8 * 1024 * 1024 * 1024  # one WADO-RS answer (the whole study)
    # one part (one DICOM object): under the Ingest RPC's 256 MiB message, which stores it
    object_bytes: int = 240 * 1024 * 1024
    parts: int = 20_000  # objects in one study
    header_bytes: int = 16 * 1024  # the headers of one part


@dataclass(frozen=True)
class DicomwebPeer:
    """The PACS's DICOMweb base URL (up to, not including, `/studies`) and the value of the
    Authorization header sent to it ("" = none)."""

    base_url: str
    authorization: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.base_url

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def headers(self, accept: str) -> dict[str, str]:
        out = {"Accept": accept}
        if self.authorization:
            out["Authorization"] = self.authorization
        return out


def authorization_problem(value: str) -> str | None:
    """Why `value` is not a usable Authorization header value ("Bearer TOKEN" or "Basic
    BASE64(user:password)"), or None when it is."""
    if len(value) > 4096:
        return "at most 4096 characters"
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() not in ("bearer", "basic") or not credentials:
        return 'either "Bearer TOKEN" or "Basic BASE64" (of user:password)'
    if not _TOKEN68.match(credentials):
        return (f"the {scheme} credentials must be one token of letters, digits and "
                "-._~+/ (then any '='), without spaces or line breaks")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "Basic credentials must be the base64 of user:password (UTF-8)"
        if ":" not in decoded:
            return "Basic credentials must be the base64 of user:password (no ':' found)"
    return None


def _media_type(content_type: str) -> tuple[str, Message]:
    msg = Message()
    msg["content-type"] = content_type
    return msg.get_content_type(), msg


def _status(reply: httpx.Response, what: str, peer: DicomwebPeer) -> None:
    if reply.status_code in (200, 204):
        return
    raise DicomwebFailed(f"{what} at {peer}: HTTP {reply.status_code}",
                         transient=reply.status_code in _TRANSIENT_STATUS)


async def _limited(chunks: AsyncIterator[bytes], limit: int, what: str
                   ) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise DicomwebFailed(f"{what} is larger than {limit} bytes")
        yield chunk


def _http_error(exc: httpx.HTTPError, what: str, peer: DicomwebPeer) -> DicomwebFailed:
    kind = type(exc).__name__
    return DicomwebFailed(f"{what} at {peer}: {kind} {str(exc)[:200]}".rstrip(),
                          transient=isinstance(exc, httpx.TransportError))


# --- QIDO-RS -----------------------------------------------------------------------------------

def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    if element is None:
        return []
    if not isinstance(element, dict):
        raise DicomwebFailed(f"attribute {tag} is not a DICOM JSON element")
    values = element.get("Value", [])
    if not isinstance(values, list):
        raise DicomwebFailed(f"attribute {tag}: Value is not a list")
    return values[:16]


def _first(item: dict[str, Any], tag: str, limit: int) -> str:
    for value in _values(item, tag):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value).strip()[:limit]
        if isinstance(value, dict):  # a PN as {"Alphabetic": ...}: not a study key of ours
            return ""
        return ""
    return ""


def parse_studies(body: bytes, patient_id: str, most: int = 200
                  ) -> tuple[list[FoundStudy], int]:
    """The first `most` matches of a QIDO-RS studies answer (DICOM JSON; the rest is not read,
    as a PACS that ignores `limit` is read by the C-FIND) and how many of them were left out
    for naming another patient (or none). Raises DicomwebFailed on a malformed answer."""
    import json

    try:
        doc = json.loads(body) if body.strip() else []
    except (ValueError, RecursionError) as exc:
        raise DicomwebFailed(f"the QIDO-RS answer is not JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, list):
        raise DicomwebFailed("the QIDO-RS answer is not a JSON array of studies")
    found: list[FoundStudy] = []
    other_patient = 0
    for i, item in enumerate(doc[:most]):
        if not isinstance(item, dict):
            raise DicomwebFailed(f"match {i + 1} of the QIDO-RS answer is not a JSON object")
        try:
            uid = _first(item, "0020000D", 80)
            if not is_valid_uid(uid):
                raise DicomwebFailed(f"StudyInstanceUID {uid[:80]!r} is not a DICOM UID")
            if _first(item, "00100020", 64) != patient_id:
                other_patient += 1
                continue
            date = _first(item, "00080020", 8)
            modalities = tuple(str(m).strip()[:16] for m in _values(item, "00080061")
                               if isinstance(m, str) and m.strip())
            try:
                count = int(_first(item, "00201208", 12) or 0)
            except ValueError:
                count = 0
        except DicomwebFailed as exc:
            raise DicomwebFailed(f"match {i + 1} of the QIDO-RS answer: {exc}") from None
        found.append(FoundStudy(uid, date if _DATE.match(date) else "",
                                _first(item, "00081030", 256), modalities[:8],
                                _first(item, "00080050", 64), max(count, 0)))
    return found, other_patient


@dataclass(frozen=True)
class QidoResult:
    studies: list[FoundStudy]
    other_patient: int  # matches left out: another patient's (or no PatientID)


async def find_studies(http: httpx.AsyncClient, peer: DicomwebPeer, patient_id: str, *,
                       modality: str = "", since: str = "", exclude_uid: str = "",
                       limit: int = 50, limits: Limits | None = None) -> QidoResult:
    """QIDO-RS `GET {url}/studies` by PatientID, ModalitiesInStudy, StudyDate from `since`
    (YYYYMMDD); the same rules as the C-FIND (query_scu.find_studies): at most 4 × `limit`
    matches are read, `exclude_uid` is left out, the newest `limit` are kept."""
    limits = limits or Limits()
    # includefield repeated, one attribute each (the form every server reads)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("PatientID", patient_id), ("limit", str(limit * 4)),
        *(("includefield", tag) for tag in INCLUDE)]
    if modality:
        params.append(("ModalitiesInStudy", modality))
    if since:
        params.append(("StudyDate", f"{since}-"))
    what = "QIDO-RS"
    try:
        async with http.stream("GET", peer.url("/studies"), params=params,
                               headers=peer.headers("application/dicom+json")) as reply:
            _status(reply, what, peer)
            if reply.status_code == 204:
                return QidoResult([], 0)
            media, _ = _media_type(reply.headers.get("content-type", ""))
            if media not in DICOM_JSON:
                raise DicomwebFailed(f"{what} at {peer} answered {media!r}, not "
                                     "application/dicom+json")
            body = bytearray()
            async for chunk in _limited(reply.aiter_bytes(), limits.qido_bytes,
                                        f"the {what} answer of {peer}"):
                body += chunk
    except httpx.HTTPError as exc:
        raise _http_error(exc, what, peer) from exc
    studies, other = parse_studies(bytes(body), patient_id, limit * 4)
    unique: dict[str, FoundStudy] = {}
    for study in studies:
        if study.study_instance_uid != exclude_uid:
            unique.setdefault(study.study_instance_uid, study)
    ordered = sorted(unique.values(), key=lambda f: f.study_date, reverse=True)
    return QidoResult(ordered[:limit], other)


# --- WADO-RS -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    index: int  # 1-based, in the order of the answer
    data: bytes


class MultipartReader:
    """An incremental reader of a multipart/related body (RFC 2046 framing): `feed` returns
    the parts completed so far, each bounded in size; `close` checks the closing delimiter."""

    def __init__(self, boundary: str, limits: Limits) -> None:
        self.delimiter = b"--" + boundary.encode("ascii")
        self.limits = limits
        self.buf = bytearray()
        self.state = "preamble"
        self.scan = 0
        self.count = 0
        self.headers: dict[str, str] = {}

    def feed(self, chunk: bytes) -> list[tuple[dict[str, str], bytes]]:
        self.buf += chunk
        out: list[tuple[dict[str, str], bytes]] = []
        while True:
            step = getattr(self, "_" + self.state)()
            if step is None:
                return out
            if isinstance(step, tuple):
                out.append(step)

    def close(self) -> None:
        if self.state != "epilogue":
            raise DicomwebFailed("the multipart answer ends before its closing boundary "
                                 f"(truncated after {self.count} part(s))")

    def _preamble(self) -> bool | None:
        at = self.buf.find(self.delimiter)
        if at < 0:
            if len(self.buf) > self.limits.header_bytes:
                raise DicomwebFailed("no multipart boundary in the first "
                                     f"{self.limits.header_bytes} bytes of the answer")
            return None
        del self.buf[:at + len(self.delimiter)]
        self.state = "after_delimiter"
        return True

    def _after_delimiter(self) -> bool | None:
        stripped = self.buf.lstrip(b" \t")
        if len(stripped) < 2:
            return None
        if stripped.startswith(b"--"):
            self.state = "epilogue"
            return True
        if not stripped.startswith(b"\r\n"):
            raise DicomwebFailed(f"malformed multipart answer after part {self.count} "
                                 "(no line break after the boundary)")
        if self.count >= self.limits.parts:
            raise DicomwebFailed(f"the answer has more than {self.limits.parts} parts")
        del self.buf[:len(self.buf) - len(stripped) + 2]
        self.state = "headers"
        return True

    def _headers(self) -> bool | None:
        if self.buf.startswith(b"\r\n"):
            block, end = b"", 2
        else:
            at = self.buf.find(b"\r\n\r\n", 0, self.limits.header_bytes + 4)
            if at < 0:
                if len(self.buf) > self.limits.header_bytes:
                    raise DicomwebFailed(f"the headers of part {self.count + 1} are longer "
                                         f"than {self.limits.header_bytes} bytes")
                return None
            block, end = bytes(self.buf[:at]), at + 4
        headers: dict[str, str] = {}
        for line in block.split(b"\r\n") if block else []:
            name, sep, value = line.partition(b":")
            if not sep:
                raise DicomwebFailed(f"part {self.count + 1} has a malformed header line")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        del self.buf[:end]
        self.headers, self.scan, self.state = headers, 0, "body"
        return True

    def _body(self) -> tuple[dict[str, str], bytes] | None:
        marker = b"\r\n" + self.delimiter
        at = self.buf.find(marker, self.scan)
        if at < 0:
            if len(self.buf) > self.limits.object_bytes + len(marker):
                raise DicomwebFailed(f"part {self.count + 1} is larger than "
                                     f"{self.limits.object_bytes} bytes")
            self.scan = max(0, len(self.buf) - len(marker) + 1)
            return None
        if at > self.limits.object_bytes:
            raise DicomwebFailed(f"part {self.count + 1} is larger than "
                                 f"{self.limits.object_bytes} bytes")
        data = bytes(self.buf[:at])
        del self.buf[:at + len(marker)]
        self.count += 1
        self.state = "after_delimiter"
        return self.headers, data

    def _epilogue(self) -> None:
        self.buf.clear()  # ignored (bounded by the answer's limit)
        return None


def check_part(index: int, headers: dict[str, str], data: bytes) -> tuple[str, str]:
    """The StudyInstanceUID and PatientID of one part, after checking that it is a DICOM
    file; DicomwebFailed else."""
    media, _ = _media_type(headers.get("content-type", ""))
    if media != "application/dicom":
        raise DicomwebFailed(f"part {index} is {media!r}, not application/dicom")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise DicomwebFailed(f"part {index} is not a DICOM file (no DICM prefix)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["StudyInstanceUID", "PatientID"])
        study = str(ds.get("StudyInstanceUID", "")).strip()
        patient = str(ds.get("PatientID", "")).strip()
    except (InvalidDicomError, ValueError, TypeError, EOFError, OSError, KeyError,
            AttributeError, OverflowError) as exc:
        raise DicomwebFailed(f"part {index} is not a readable DICOM file "
                             f"({type(exc).__name__})") from None
    if not is_valid_uid(study):
        raise DicomwebFailed(f"part {index} is not a readable DICOM file (no valid "
                             "StudyInstanceUID)")
    return study, patient


@dataclass
class RetrieveResult:
    parts: int = 0  # parts read
    delivered: int = 0  # handed to `store`
    ignored: int = 0  # another study's or another patient's, left out
    bytes: int = 0


async def retrieve_study(http: httpx.AsyncClient, peer: DicomwebPeer, study_instance_uid: str,
                         patient_id: str, store: Callable[[Part], Awaitable[None]], *,
                         limits: Limits | None = None) -> RetrieveResult:
    """WADO-RS `GET {url}/studies/{uid}` as multipart/related application/dicom (as stored:
    transfer-syntax=*); each part of the asked study and patient goes to `store` as it
    arrives. Parts already stored stay stored when a later part is refused."""
    if not is_valid_uid(study_instance_uid):
        raise ValueError(f"not a DICOM UID: {study_instance_uid[:80]!r}")
    limits = limits or Limits()
    result = RetrieveResult()
    what = "WADO-RS"
    try:
        async with http.stream("GET", peer.url(f"/studies/{quote(study_instance_uid)}"),
                               headers=peer.headers(WADO_ACCEPT)) as reply:
            _status(reply, what, peer)
            if reply.status_code == 204:
                raise DicomwebFailed(f"{what} at {peer}: no content for the study")
            media, msg = _media_type(reply.headers.get("content-type", ""))
            boundary = msg.get_param("boundary")
            if media != "multipart/related":
                raise DicomwebFailed(f"{what} at {peer} answered {media!r}, not "
                                     "multipart/related")
            if not isinstance(boundary, str) or not 0 < len(boundary) <= 70 \
                    or not boundary.isascii():
                raise DicomwebFailed(f"{what} at {peer}: the multipart answer has no usable "
                                     "boundary")
            reader = MultipartReader(boundary, limits)
            async for chunk in _limited(reply.aiter_bytes(), limits.study_bytes,
                                        f"the {what} answer of {peer}"):
                result.bytes += len(chunk)
                for headers, data in reader.feed(chunk):
                    result.parts += 1
                    study, patient = check_part(result.parts, headers, data)
                    if study != study_instance_uid or patient != patient_id:
                        result.ignored += 1
                        continue
                    await store(Part(result.parts, data))
                    result.delivered += 1
            reader.close()
    except httpx.HTTPError as exc:
        raise _http_error(exc, what, peer) from exc
    if result.parts == 0:
        raise DicomwebFailed(f"{what} at {peer}: the answer has no parts")
    return result
