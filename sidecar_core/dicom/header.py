"""Reads the few header values the ingest index needs straight from a Part-10 object's bytes.

pydicom's `dcmread` builds a whole Dataset and converts each value through its hooks, which
costs far more than the C-STORE hot path can afford. This reader walks the byte layout of the
common case only - a 'DICM' prefix, an explicit VR little endian file meta group, and a data
set in explicit VR little endian - and converts the values it was asked for the way pydicom
presents them (then made JSON-able the way `parse._json_value` does).

It is an optimisation, never a second opinion: whenever it cannot vouch that pydicom would
read the very same values without raising, it raises `Unsupported` and the caller reads the
object with pydicom instead. That covers other transfer syntaxes, structures pydicom would
read leniently or reject (truncated values, undefined lengths other than sequences, unknown
VRs, a VR other than the dictionary's for a needed element, malformed sequences), non-ASCII or
control characters in a needed value, values pydicom keeps as text or converts unusually, and
any pydicom configuration other than the ingest service's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from struct import Struct
from typing import Any

import pydicom.config
import pydicom.hooks
import pydicom.uid
from pydicom.charset import STAND_ALONE_ENCODINGS, python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword


class Unsupported(Exception):
    """The object is outside what this reader handles; read it with pydicom."""


def _wire(tag: int) -> int:
    """A tag as its four bytes read as one little endian number: element << 16 | group.
    The walkers compare tags in this form, which saves work per element."""
    return (tag & 0xFFFF) << 16 | tag >> 16


# An element header in explicit VR little endian: tag (wire form), VR, 16-bit length.
_ELEMENT = Struct("<L2sH")
_ITEM = Struct("<LL")  # an item or delimiter header: tag (wire form), 32-bit length
_U32 = Struct("<L")

_UNDEFINED = 0xFFFFFFFF
_ITEM_TAG = _wire(0xFFFEE000)
_ITEM_DELIMITER = _wire(0xFFFEE00D)
_SEQUENCE_DELIMITER = _wire(0xFFFEE0DD)
_CHARSET_TAG = _wire(0x00080005)
_PIXEL_TAGS = frozenset(_wire(t) for t in (0x7FE00010, 0x7FE00009, 0x7FE00008))  # stop here
_TOP_LEVEL_STOPS = _PIXEL_TAGS | {_ITEM_TAG, _ITEM_DELIMITER, _SEQUENCE_DELIMITER}
_META_GROUP = 0x0002
_MAX_DEPTH = 16

# Header size by VR: 8 bytes with a 16-bit length, 12 with reserved bytes and a 32-bit length
# (PS3.5 7.1.2); the same 34 VRs as pydicom's ENCODED_VR.
_HEADER_SIZE = {
    **dict.fromkeys(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split(), 8),
    **dict.fromkeys(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split(), 12),
}

# Transfer syntaxes whose data set is not explicit VR little endian (pydicom's read_partial).
_NOT_EXPLICIT_LE = frozenset(
    {
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
    }
)

_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))
_ascii_safe_cache: dict[str, bool] = {}


def settings_supported() -> bool:
    """True when pydicom is configured the way this reader imitates (the ingest service's)."""
    config = pydicom.config
    hooks = pydicom.hooks.hooks
    return (
        config.settings.reading_validation_mode == config.IGNORE
        and not config.datetime_conversion
        and not config.use_DS_decimal
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and not config.use_none_as_empty_text_VR_value
        and config.data_element_callback is None
        and hooks.raw_element_vr is pydicom.hooks.raw_element_vr
        and hooks.raw_element_value is pydicom.hooks.raw_element_value
        and not hooks.raw_element_kwargs
        and not pydicom.uid.PrivateTransferSyntaxes
    )


class HeaderReader:
    """Reads the named top-level attributes (and three file meta ones) of one object."""

    def __init__(self, keywords: Iterable[str]) -> None:
        self._wanted: dict[int, tuple[str, bytes]] = {}
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is None or tag >> 16 == 0x0002:
                raise ValueError(f"{keyword!r} is not a data set attribute")
            vr = dictionary_VR(tag).encode()
            if vr not in _CONVERTERS:
                raise ValueError(f"{keyword!r} has VR {vr!r}, which is not converted here")
            self._wanted[_wire(tag)] = (keyword, vr)
        self._wanted_tags = frozenset(self._wanted) | {_CHARSET_TAG}

    def read(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """Returns (data set values, file meta values) by keyword, for the elements present.

        Values are JSON-able as `parse._json_value` makes pydicom's: str, int, float, None, or
        a list of them. The file meta values are TransferSyntaxUID, MediaStorageSOPClassUID
        and MediaStorageSOPInstanceUID. Raises Unsupported (or any other exception) when pydicom
        has to read the object instead.
        """
        if len(data) < 132 or data[128:132] != b"DICM":
            raise Unsupported("no 'DICM' prefix")
        meta_raw, pos = _read_file_meta(data)
        meta: dict[str, Any] = {}
        for tag, keyword in ((_wire(0x00020010), "TransferSyntaxUID"),
                             (_wire(0x00020002), "MediaStorageSOPClassUID"),
                             (_wire(0x00020003), "MediaStorageSOPInstanceUID")):
            if tag in meta_raw:
                vr, raw = meta_raw[tag]
                if vr != b"UI":
                    raise Unsupported(f"{keyword} has VR {vr!r}")
                meta[keyword] = _uid_value(raw)
        syntax = meta.get("TransferSyntaxUID")
        if not isinstance(syntax, str) or syntax in _NOT_EXPLICIT_LE:
            raise Unsupported(f"transfer syntax {syntax!r}")

        found: dict[int, tuple[bytes, bytes]] = {}
        _read_data_set(data, pos, self._wanted_tags, found)
        encoding = _check_charset(found.pop(_CHARSET_TAG, None))
        values: dict[str, Any] = {}
        for tag, (vr, raw) in found.items():
            keyword, expected_vr = self._wanted[tag]
            if vr != expected_vr:
                raise Unsupported(f"{keyword} has VR {vr!r}, not {expected_vr!r}")
            if vr == b"PN":
                values[keyword] = _pn(raw, encoding)
            else:
                values[keyword] = _CONVERTERS[vr](raw) if raw else _EMPTY.get(vr, "")
        return values, meta


def _read_file_meta(data: bytes) -> tuple[dict[int, tuple[bytes, bytes]], int]:
    """The (0002,eeee) elements after the prefix, and where the data set starts."""
    meta: dict[int, tuple[bytes, bytes]] = {}
    n = len(data)
    pos = 132
    while n - pos >= 8:
        tag, vr, length = _ELEMENT.unpack_from(data, pos)
        if tag & 0xFFFF != _META_GROUP:
            break
        size = _HEADER_SIZE.get(vr)
        if size is None or vr == b"SQ" or n - pos < size:
            raise Unsupported(f"file meta element with VR {vr!r}")
        if size == 12:
            (length,) = _U32.unpack_from(data, pos + 8)
        start = pos + size
        pos = start + length
        if pos > n:  # also an undefined length
            raise Unsupported("file meta element runs past the end")
        meta[tag] = (vr, data[start:pos])
    if not meta:
        raise Unsupported("no file meta group")
    vr, value = next(iter(meta.values()))  # the first tag read, with its last value
    if not (vr in (b"OB", b"UI") or (vr == b"UL" and len(value) == 4)):
        # pydicom converts this element to test the encoding; keep to ones that cannot fail
        raise Unsupported("unusual first file meta element")
    if n - pos >= 2 and data[pos : pos + 2] == b"\0\0":
        raise Unsupported("command set elements")  # pydicom reads those as implicit VR
    return meta, pos


def _read_data_set(
    data: bytes, pos: int, wanted: frozenset[int], found: dict[int, tuple[bytes, bytes]]
) -> None:
    """Walks the top-level elements up to pixel data, keeping the wanted ones (last wins,
    like pydicom's dict) and checking the sequences pydicom parses while reading."""
    n = len(data)
    unpack = _ELEMENT.unpack_from
    header_size = _HEADER_SIZE.get
    stops = _TOP_LEVEL_STOPS
    while n - pos >= 8:
        tag, vr, length = unpack(data, pos)
        size = header_size(vr)
        if size is None:
            raise Unsupported(f"unknown VR {vr!r}")  # pydicom would guess implicit VR
        if size == 12:
            if n - pos < 12:
                raise Unsupported("truncated element header")
            (length,) = _U32.unpack_from(data, pos + 8)
        if tag in stops:
            if tag in _PIXEL_TAGS:
                return
            raise Unsupported("item or delimiter tag at the top level")
        start = pos + size
        pos = start + length
        if pos > n:
            if length != _UNDEFINED or vr != b"SQ" or tag in wanted:
                raise Unsupported("element runs past the end, or undefined length")
            pos = _check_sequence(data, start, 1)
        elif tag in wanted:
            found[tag] = (vr, data[start:pos])  # a sequence here fails the VR check later


def _check_sequence(data: bytes, pos: int, depth: int) -> int:
    """Checks an undefined length sequence value that starts at `pos`, as pydicom parses it
    while reading; returns the position after its delimiter. (pydicom keeps the value of a
    sequence of defined length as bytes until it is used, so those are only skipped.)"""
    if depth > _MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    n = len(data)
    while True:
        if n - pos < 8:
            raise Unsupported("truncated sequence")
        tag, item_length = _ITEM.unpack_from(data, pos)
        pos += 8
        if tag == _SEQUENCE_DELIMITER and item_length == 0:
            return pos
        if tag != _ITEM_TAG:
            raise Unsupported("no item where a sequence item was expected")
        if item_length == _UNDEFINED:
            pos = _check_item(data, pos, None, depth)
        elif pos + item_length > n:
            raise Unsupported("sequence item runs past the end")
        else:
            pos = _check_item(data, pos, pos + item_length, depth)


def _check_item(data: bytes, pos: int, end: int | None, depth: int) -> int:
    """Checks the elements of one item (up to `end`, or its item delimiter when None)."""
    limit = len(data) if end is None else end
    while pos != end:
        if limit - pos < 8:
            raise Unsupported("truncated sequence item")
        tag, vr, length = _ELEMENT.unpack_from(data, pos)
        if tag & 0xFFFF == 0xFFFE:
            if end is None and tag == _ITEM_DELIMITER and data[pos + 4 : pos + 8] == bytes(4):
                return pos + 8
            raise Unsupported("unexpected delimiter in a sequence item")
        size = _HEADER_SIZE.get(vr)
        if size is None:
            raise Unsupported(f"VR {vr!r} in a sequence item")  # also implicit VR items
        if size == 12:
            if limit - pos < 12:
                raise Unsupported("truncated element header in a sequence item")
            (length,) = _U32.unpack_from(data, pos + 8)
        start = pos + size
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise Unsupported("undefined length in a sequence item")
            pos = _check_sequence(data, start, depth + 1)
            if pos > limit:
                raise Unsupported("sequence runs past the end of its item")
            continue
        pos = start + length
        if pos > limit:
            raise Unsupported("element runs past the end of its sequence item")
        if tag == _CHARSET_TAG and vr != b"CS":
            raise Unsupported("Specific Character Set with an unusual VR")
    return pos


def _check_charset(charset: tuple[bytes, bytes] | None) -> str | None:
    """Accepts a Specific Character Set whose first encoding - the one pydicom decodes SH/LO
    values with when they hold no escape sequence - reads printable ASCII as ASCII. Returns
    the Python encoding non-ASCII PN values may be decoded with here (one stand-alone
    character set: pydicom decodes a value without escape sequences with it), else None."""
    if charset is None:
        return "iso8859"  # the default repertoire: pydicom decodes with iso8859
    vr, raw = charset
    if vr != b"CS":
        raise Unsupported("Specific Character Set with an unusual VR")
    terms = _ascii_text(raw).split("\\")
    if any(term not in python_encoding for term in terms):
        raise Unsupported("unknown or misspelt Specific Character Set")
    if len(terms) > 1 and any(term in STAND_ALONE_ENCODINGS for term in terms):
        raise Unsupported("stand-alone Specific Character Set with code extensions")
    encoding = python_encoding[terms[0] or "ISO_IR 6"]
    if not _ascii_safe(encoding):
        raise Unsupported(f"encoding {encoding!r} does not read ASCII as ASCII")
    return encoding if len(terms) == 1 else None


def _ascii_safe(encoding: str) -> bool:
    safe = _ascii_safe_cache.get(encoding)
    if safe is None:
        try:
            safe = _PRINTABLE_ASCII.decode(encoding) == _PRINTABLE_ASCII.decode("ascii")
        except (LookupError, UnicodeError):
            safe = False
        _ascii_safe_cache[encoding] = safe
    return safe


def _ascii_text(raw: bytes) -> str:
    """The value without trailing spaces and NULs; only printable ASCII is accepted, so that
    every character set and every str.strip() reads it the same."""
    raw = raw.rstrip(b" \x00")
    if not raw.isascii():
        raise Unsupported("non-ASCII value")
    text = raw.decode("ascii")
    if not text.isprintable():
        raise Unsupported("control characters in a value")
    return text


def _pn(raw: bytes, encoding: str | None) -> Any:
    """A PN value as `parse.person_name_json` makes pydicom's PersonName: a dict of the non-empty
    component groups (Alphabetic, Ideographic, Phonetic), or a list of them; None when empty."""
    raw = raw.rstrip(b" \x00")
    if not raw:
        return None
    if raw.isascii():
        text = raw.decode("ascii")
    elif encoding is None or b"\x1b" in raw:
        raise Unsupported("PN with code extensions")  # pydicom decodes each part
    else:
        try:
            text = raw.decode(encoding)
        except UnicodeError:
            raise Unsupported("PN not decodable in its character set") from None
    if not text.isprintable():
        raise Unsupported("control characters in a PN value")
    names = [_pn_groups(part) or None for part in text.split("\\")]
    return names[0] if len(names) == 1 else names


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _pn_groups(text: str) -> dict[str, str]:
    groups = text.split("=")
    if len(groups) > 3:
        raise Unsupported("PN with more than three component groups")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}


def _uid_value(raw: bytes) -> str:
    """A UI value as pydicom presents it: trailing NULs and surrounding spaces removed."""
    text = _ascii_text(raw)
    if "\\" in text:
        raise Unsupported("multi-valued UID")
    return text.strip()


def _us(raw: bytes) -> Any:
    if len(raw) == 2:
        return raw[0] | raw[1] << 8
    if len(raw) % 2:
        raise Unsupported("US value of odd length")  # pydicom raises BytesLengthException
    return [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]


def _cs(raw: bytes) -> Any:  # also DA and TM (pydicom's multi_string)
    text = _ascii_text(raw)
    return text.split("\\") if "\\" in text else text


def _lo(raw: bytes) -> Any:  # SH and LO; printable ASCII reads the same in any accepted charset
    text = _ascii_text(raw)
    return [part.rstrip(" ") for part in text.split("\\")] if "\\" in text else text


def _ds(raw: bytes) -> Any:
    text = _ascii_text(raw).strip()
    if "\\" in text:
        return [_ds_number(part) for part in text.split("\\")]
    return _ds_number(text)


def _ds_number(part: str) -> Any:
    """float(DSfloat(part)): DSfloat is a float made by float(part), or the str if blank."""
    try:
        return float(part)
    except ValueError:
        if part.strip() == "":
            return part
        raise Unsupported(f"DS {part!r} is not a number") from None  # pydicom keeps the str


def _is(raw: bytes) -> Any:
    text = _ascii_text(raw)
    if "\\" in text:
        return [_is_number(part) for part in text.split("\\")]
    return _is_number(text)


def _is_number(part: str) -> Any:
    """int(IS(part)): IS is an int made by int(part) that equals float(part), or the str if
    blank; anything else (an ISfloat, a number written with a fraction) is left to pydicom."""
    if part.strip() == "":
        return part
    try:
        number = int(part)
    except ValueError:
        raise Unsupported(f"IS {part!r} is not an integer") from None
    if number != float(part):
        raise Unsupported(f"IS {part!r} is beyond float precision")
    return number


# How `parse._json_value(element.value)` comes out for a non-empty value of each VR that the
# index reads, and for an empty one (a VR missing here is "" when empty).
_CONVERTERS: dict[bytes, Callable[[bytes], Any]] = {
    b"US": _us, b"UI": _uid_value, b"CS": _cs, b"DA": _cs, b"TM": _cs,
    b"SH": _lo, b"LO": _lo, b"DS": _ds, b"IS": _is, b"AS": _cs, b"PN": _cs,  # PN: see _pn
}
_EMPTY: dict[bytes, Any] = {b"US": None, b"DS": None, b"IS": None}
