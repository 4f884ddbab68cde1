"""Accept-header negotiation (PS3.18 8.7) and multipart/related bodies for WADO-RS responses."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)

# Single-frame media types of compressed transfer syntaxes (PS3.18 Table 8.7.3-2).
IMAGE_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}


@dataclass
class MediaRange:
    """One entry of an Accept header: `multipart/related; type="..."; transfer-syntax=...`."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """The type of each part for a multipart range ("" when not named)."""
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first (q, then order); `*/*` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[tuple[float, int, MediaRange]] = []
    for index, item in enumerate(_split(header, ",")):
        pieces = _split(item, ";")
        if not pieces or not pieces[0].strip():
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1") or 1)
        except ValueError:
            q = 0.0
        if q > 0:
            ranges.append((-q, index, MediaRange(pieces[0].strip().lower(), params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def _split(text: str, separator: str) -> list[str]:
    """Splits on `separator` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def is_multipart_of(r: MediaRange, part_types: Iterable[str]) -> bool:
    """Whether the range admits a multipart/related body whose parts have one of `part_types`."""
    if r.media_type in ("*/*", "multipart/*"):
        return True
    if r.media_type != "multipart/related":
        return False
    wanted = r.part_type
    return not wanted or wanted == "*/*" or wanted in part_types or wanted.endswith("/*") and any(
        t.startswith(wanted[:-1]) for t in part_types)


def instance_syntax(ranges: list[MediaRange], stored: str) -> str | None:
    """The transfer syntax to send a stored instance in for these ranges, or None (406).

    `*` means as stored; no transfer-syntax means Explicit VR Little Endian (PS3.18 8.7.3.5.2);
    a named syntax is produced when it is the stored one or an uncompressed one."""
    for r in ranges:
        if not is_multipart_of(r, ("application/dicom",)):
            if r.media_type == "application/dicom":
                pass  # a single-part request: answered as multipart with one part
            else:
                continue
        syntax = r.transfer_syntax
        if syntax == "*" or syntax == stored:
            return stored
        if syntax is None:
            return EXPLICIT_VR_LE
        if syntax in UNCOMPRESSED:
            return syntax
    return None


@dataclass
class FrameChoice:
    """How to send frames: as stored (compressed) or uncompressed, and the parts' media type."""

    as_stored: bool
    part_type: str
    transfer_syntax: str


def frame_choice(ranges: list[MediaRange], stored: str, compressed: bool) -> FrameChoice | None:
    """The representation of an instance's frames for these ranges, or None (406)."""
    image_type = IMAGE_MEDIA_TYPES.get(stored, "")
    aliases = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
    for r in ranges:
        if r.part_type in aliases:
            r = MediaRange(r.media_type, {**r.params, "type": aliases[r.part_type]}, r.q)
        types = ("application/octet-stream", image_type) if image_type else \
            ("application/octet-stream",)
        if not is_multipart_of(r, types):
            continue
        part = r.part_type if r.part_type and not r.part_type.endswith("*") else ""
        syntax = r.transfer_syntax
        if compressed:
            if syntax in ("*", stored) or (syntax is None and part == image_type):
                return FrameChoice(True, part or "application/octet-stream", stored)
            if part in ("", "application/octet-stream") and syntax in (None, EXPLICIT_VR_LE):
                return FrameChoice(False, "application/octet-stream", EXPLICIT_VR_LE)
        elif part in ("", "application/octet-stream") and syntax in (
                None, "*", EXPLICIT_VR_LE, stored):
            return FrameChoice(True, "application/octet-stream", EXPLICIT_VR_LE)
    return None


def new_boundary() -> str:
    return "sidecar-" + secrets.token_hex(12)


def content_type(part_type: str, boundary: str, transfer_syntax: str = "") -> str:
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{syntax}; boundary={boundary}'


def part_header(boundary: str, part_content_type: str, location: str = "") -> bytes:
    where = f"Content-Location: {location}\r\n" if location else ""
    return (f"--{boundary}\r\nContent-Type: {part_content_type}\r\n{where}\r\n").encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def body(boundary: str, parts: Iterable[tuple[str, bytes]]) -> bytes:
    """A whole multipart/related body from (content type, bytes) parts."""
    return b"".join(chunks(boundary, parts))


def chunks(boundary: str, parts: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    for part_type, data in parts:
        yield part_header(boundary, part_type)
        yield data
        yield b"\r\n"
    yield closing(boundary)
