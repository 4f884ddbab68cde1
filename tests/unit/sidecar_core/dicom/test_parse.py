"""parse_instance's fast header reader gives exactly what the pydicom reader gives.

Every case compares the outcome of `parse_instance` (fast path, falling back to pydicom) with
`_parse_with_pydicom` (the reference): the same ParsedInstance - fields, attribute keys, values
and their JSON types - or the same rejection (reason, message, ids) or the same error.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
import pytest
from pydicom.data.data_manager import DATA_ROOT, DataTypes, external_data_sources
from pydicom.data.download import get_data_dir
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from sidecar_core.dicom import parse
from sidecar_core.dicom.header import Unsupported
from sidecar_core.dicom.parse import Rejected, _parse_with_pydicom, parse_instance
from tests.helpers import ct_slice, to_bytes

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom warns about the odd objects

LIMIT = 1 << 30
STUDY, SERIES, SOP = "1.2.826.0.1.1", "1.2.826.0.1.1.2", "1.2.826.0.1.1.2.3"


@pytest.fixture(autouse=True)
def service_settings() -> Iterator[None]:
    """pydicom as the ingest service configures it (ingest_svc.main)."""
    before = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    yield
    pydicom.config.settings.reading_validation_mode = before


def _plain(value: Any) -> Any:
    """A value with its JSON type made explicit (0 and 0.0 differ; UID counts as str)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else float(value))
    for kind in (bool, int, str):
        if isinstance(value, kind):
            return (kind.__name__, kind(value))
    return value if value is None else ("other", type(value).__name__, repr(value))


def outcome(fn: Callable[[bytes, int], parse.ParsedInstance], data: bytes,
            max_bytes: int = LIMIT) -> tuple[Any, ...]:
    try:
        p = fn(data, max_bytes)
    except Rejected as rej:
        return ("rejected", rej.reason, rej.message, rej.ids)
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    fields = (p.study_instance_uid, p.series_instance_uid, p.sop_instance_uid,
              p.sop_class_uid, p.transfer_syntax_uid, p.accession)
    return ("parsed", _plain(list(fields)), list(p.attributes),
            {k: _plain(v) for k, v in p.attributes.items()},
            json.dumps(p.attributes, allow_nan=True))


def assert_same(data: bytes, max_bytes: int = LIMIT) -> tuple[Any, ...]:
    expected = outcome(_parse_with_pydicom, data, max_bytes)
    assert outcome(parse_instance, data, max_bytes) == expected
    return expected


def fast(data: bytes) -> bool:
    """Whether the fast reader handles `data` itself."""
    try:
        parse._FAST_READER.read(data)
    except Unsupported:
        return False
    return True


# --- objects written by pydicom -------------------------------------------------------------


def written(ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    return to_bytes(ds)


def item(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def with_sequences(undefined: bool) -> Dataset:
    """Sequences (nested, empty items, private) ahead of and between the index attributes."""
    ds = ct_slice(rows=8, cols=8)
    inner = Sequence([item(CodeValue="T-D3000", CodeMeaning="Chest")])
    ds.ReferencedImageSequence = Sequence(
        [item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID="1.2.3.4"),
         Dataset()])
    ds.AnatomicRegionSequence = Sequence(
        [item(CodeValue="C", AnatomicRegionModifierSequence=inner)])
    ds.ProcedureCodeSequence = Sequence([])
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "SQ", Sequence([item(PatientID="X", Modality="MR")]))
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = undefined
            for entry in elem.value:
                entry.is_undefined_length_sequence_item = undefined
    return ds


def test_synthetic_ct_values() -> None:
    ds = ct_slice(rows=64, cols=64, z=-12.5, accession="  A-17 ")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesNumber, ds.InstanceNumber, ds.SliceThickness = "3", " 12", "1.25"
    ds.StudyDate, ds.StudyTime, ds.SeriesDescription = "20240102", "101500.5", "Chest 1.0 B31f"
    data = written(ds)
    assert fast(data)
    result = assert_same(data)
    attributes = parse_instance(data, LIMIT).attributes
    assert attributes == {
        "Modality": "CT", "BodyPartExamined": "CHEST", "SeriesDescription": "Chest 1.0 B31f",
        "SeriesNumber": 3, "InstanceNumber": 12, "ImagePositionPatient": [0.0, 0.0, -12.5],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "PixelSpacing": [0.7, 0.7],
        "SliceThickness": 1.25, "Rows": 64, "Columns": 64,
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PhotometricInterpretation": "MONOCHROME2",
        "StudyDate": "20240102", "StudyTime": "101500.5",
    }
    assert result[3]["SeriesNumber"] == ("int", 3)
    assert result[3]["ImagePositionPatient"][0] == ("float", 0.0)
    assert parse_instance(data, LIMIT).accession == "A-17"


def test_fast_path_serves_the_common_case(monkeypatch: pytest.MonkeyPatch) -> None:
    data = written(ct_slice(rows=512, cols=512))
    expected = _parse_with_pydicom(data, LIMIT)

    def no_pydicom(data: bytes, max_bytes: int) -> parse.ParsedInstance:
        raise AssertionError("fell back to pydicom")

    monkeypatch.setattr(parse, "_parse_with_pydicom", no_pydicom)
    assert parse_instance(data, LIMIT) == expected


def test_other_settings_use_pydicom() -> None:
    data = written(ct_slice())
    pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
    assert not parse.settings_supported()
    assert_same(data)


def _variants() -> Iterator[tuple[str, bytes, bool]]:
    """(name, object, whether the fast reader should take it)"""
    yield "ct-9kb", written(ct_slice(rows=64, cols=64)), True
    yield "ct-512x512", written(ct_slice(rows=512, cols=512)), True
    yield "implicit-vr", written(ct_slice(), ImplicitVRLittleEndian), False
    yield "big-endian", written(ct_slice(), ExplicitVRBigEndian), False
    yield "deflated", written(ct_slice(), DeflatedExplicitVRLittleEndian), False
    ds = ct_slice()
    ds.PixelData = encapsulate([b"\0" * 64])
    ds["PixelData"].is_undefined_length = True
    yield "encapsulated-syntax", written(ds, JPEG2000Lossless), True
    yield "defined-length-sequences", written(with_sequences(undefined=False)), True
    yield "undefined-length-sequences", written(with_sequences(undefined=True)), True
    for charset, codec in (("ISO_IR 100", "latin_1"), ("ISO_IR 192", "utf-8")):
        ds = ct_slice()
        ds.SpecificCharacterSet = charset
        ds.PatientName = "Müller^Jürgen"  # not indexed: still the fast path
        ds.StudyDescription = "Thorax"
        yield f"non-ascii-name-{charset}", written(ds), True
        ds.StudyDescription = "Thorax ohne Kontrastmittel (Übersicht)"
        yield f"non-ascii-description-{charset}", written(ds), False
        assert ds.StudyDescription.encode(codec)
    ds = ct_slice()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.StudyDescription = "CT Chest"
    yield "iso2022-ascii-values", written(ds), True
    ds = ct_slice()
    ds.ImageType = ["DERIVED", "SECONDARY", "", "MPR"]
    ds.PixelSpacing, ds.SliceThickness, ds.SeriesNumber, ds.Modality = None, "", None, ""
    ds.Laterality, ds.ImageLaterality, ds.StudyDate, ds.FrameOfReferenceUID = "", "U", "", ""
    ds.NumberOfFrames, ds.ImagerPixelSpacing, ds.AcquisitionNumber = "1", ["0.1", "0.1"], "  "
    yield "empty-and-multi-values", written(ds), True
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        ds = ct_slice()
        delattr(ds, keyword)
        yield f"missing-{keyword}", written(ds), True
        ds = ct_slice()
        setattr(ds, keyword, "")
        yield f"empty-{keyword}", written(ds), True
        ds = ct_slice()
        setattr(ds, keyword, "1.02.3")
        yield f"invalid-{keyword}", written(ds), True
    ds = ct_slice()
    ds.SOPInstanceUID = "1." + "2" * 70
    yield "long-uid", written(ds), True
    ds = ct_slice()
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.999")
    yield "sop-mismatch", written(ds), True
    yield "long-accession", written(ct_slice(accession="A" * 65)), True
    yield "accession-64", written(ct_slice(accession="A" * 64)), True
    yield "not-dicom", b"hello, this is not DICOM at all" * 9, False
    yield "empty", b"", False
    dataset_only = DicomBytesIO()
    dataset_only.is_little_endian, dataset_only.is_implicit_VR = True, False
    write_dataset(dataset_only, ct_slice())
    yield "no-preamble", dataset_only.getvalue(), False


with warnings.catch_warnings():  # pydicom warns about writing the invalid values
    warnings.simplefilter("ignore")
    VARIANTS = list(_variants())


@pytest.mark.parametrize(("data", "takes_fast_path"), [v[1:] for v in VARIANTS],
                         ids=[v[0] for v in VARIANTS])
def test_synthetic_objects(data: bytes, takes_fast_path: bool) -> None:
    assert fast(data) == takes_fast_path
    assert_same(data)


def test_rejections_are_unchanged() -> None:
    data = written(ct_slice())
    assert assert_same(data, max_bytes=len(data) - 1)[1] == "OBJECT_TOO_LARGE"
    assert assert_same(b"")[1:3] == ("NOT_DICOM", "empty object")
    ds = ct_slice()
    ds.SeriesInstanceUID = "1.2.03"
    result = assert_same(written(ds))
    assert result[1] == "INVALID_UID" and result[3]["study_instance_uid"] == ds.StudyInstanceUID
    assert assert_same(written(ct_slice(accession="A" * 65)))[1] == "INVALID_ACCESSION"


# --- objects assembled byte by byte ---------------------------------------------------------

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def el(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    if vr in LONG_VRS:
        head = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, size)
    else:
        head = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), size)
    return head + value


def text(value: str | bytes, pad: bytes = b" ") -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return raw + pad if len(raw) % 2 else raw


def ui(value: str) -> bytes:
    return text(value, b"\0")


def part10(body: bytes, syntax: bytes = ui(ExplicitVRLittleEndian), sop: str = SOP) -> bytes:
    meta = (el(0x00020001, "OB", b"\0\1") + el(0x00020002, "UI", ui(CTImageStorage))
            + el(0x00020003, "UI", ui(sop)) + el(0x00020010, "UI", syntax))
    return b"\0" * 128 + b"DICM" + el(0x00020000, "UL", struct.pack("<L", len(meta))) + meta + body


BASE = {tag: el(tag, vr, value) for tag, vr, value in (
    (0x00080016, "UI", ui(CTImageStorage)), (0x00080018, "UI", ui(SOP)),
    (0x00080050, "SH", text("ACC9")), (0x00080060, "CS", text("CT")),
    (0x00180050, "DS", text("2.5")), (0x0020000D, "UI", ui(STUDY)),
    (0x0020000E, "UI", ui(SERIES)), (0x00200013, "IS", text("7")), (0x00280010, "US", b"\0\2"),
)}


def body(*extra: bytes, **changes: bytes | None) -> bytes:
    """The BASE elements in tag order with `changes` (tag as hex name, e.g. t00180050)."""
    elements = dict(BASE)
    for name, value in changes.items():
        tag = int(name[1:], 16)
        if value is None:
            elements.pop(tag, None)
        else:
            elements[tag] = value
    return b"".join(elements[t] for t in sorted(elements)) + b"".join(extra)


UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0\0\0\0\0"
SEQ_END = b"\xfe\xff\xdd\xe0\0\0\0\0"
PIXELS = el(0x7FE00010, "OW", b"\0\1" * 8)


def handmade() -> Iterator[tuple[str, bytes]]:
    yield "base", part10(body())
    for value in ("1.0", " 3", "1e2", "-0.5 ", ".5", "1.", "+7", "nan", "inf", "1_000", "abc",
                  "1\\\\2", " \\3", "  ", "1.5\0", "1,5", "1.0\t"):
        yield f"DS {value!r}", part10(body(t00180050=el(0x00180050, "DS", text(value))))
    for value in ("3", "  3", "+4 ", "-2", "1.0", "1.5", "99999999999999999999", "1A", "",
                  " \\3 ", "007", "1_0", "4\\5\\6"):
        yield f"IS {value!r}", part10(body(t00200013=el(0x00200013, "IS", text(value))))
    for cs in (b"CT", b" CT", b"CT\\MR", b"CT\0", b"C\x01", b"\xc9T", b"CT\\", b""):
        yield f"CS {cs!r}", part10(body(t00080060=el(0x00080060, "CS", text(cs))))
    for sh in (b"  ACC ", b"A\\B", b"\x1b$B", b"A\0B", b"x" * 66):
        yield f"SH {sh!r}", part10(body(t00080050=el(0x00080050, "SH", text(sh))))
    for lo in (b" Chest \\ Abd  \\", b"Chest\0", b"\\"):
        yield f"LO {lo!r}", part10(body(t00081030=el(0x00081030, "LO", text(lo))))
    for value in (" 1.2.3 ", "1.2.3\\1.2.4", "1.2.3\0\0", "\0" * 4, "1.2.a"):
        yield f"UI {value!r}", part10(body(t0020000D=el(0x0020000D, "UI", text(value, b"\0"))))
    for us in (b"", b"\0\1\0\2", b"\1\0\0"):
        yield f"US {us!r}", part10(body(t00280010=el(0x00280010, "US", us)))
    yield "Rows as SS", part10(body(t00280010=el(0x00280010, "SS", b"\0\2")))
    yield "Modality as UN", part10(body(t00080060=el(0x00080060, "UN", b"CT")))
    yield "Modality as LO", part10(body(t00080060=el(0x00080060, "LO", b"CT")))
    yield "sequence in an index tag", part10(body(t00080060=el(0x00080060, "SQ", b"")))
    for charset in (b"ISO_IR 100", b"ISO_IR 999", b"ISO_IR 192\\ISO 2022 IR 87", b"", b"\\GBK"):
        yield f"charset {charset!r}", part10(body(t00080005=el(0x00080005, "CS", text(charset))))
    yield "charset as LO", part10(body(t00080005=el(0x00080005, "LO", text("ISO_IR 100"))))
    sq_end = el(0x00081140, "SQ", b"", UNDEFINED) + ITEM + struct.pack("<L", UNDEFINED)
    yield "undefined sequence", part10(body(t00081140=sq_end + ITEM_END + SEQ_END))
    yield "sequence without delimiter", part10(body(t00081140=sq_end + ITEM_END))
    yield "item without delimiter", part10(body(t00081140=sq_end + SEQ_END))
    yield "delimiter with a length", part10(body(t00081140=sq_end + ITEM_END + SEQ_END[:4]
                                                 + b"\4\0\0\0"))
    implicit_item = struct.pack("<HHL", 0x0008, 0x0100, 2) + b"T1"
    yield "implicit VR in an item", part10(body(t00081140=sq_end + implicit_item + ITEM_END
                                                + SEQ_END))
    bad = el(0x00091001, "SQ", ITEM + b"\x08\0\0\0" + b"garbage!")
    yield "defined length sequence of garbage", part10(body(t00091001=bad))
    yield "undefined length OB", part10(body(t00091002=el(0x00091002, "OB", b"", UNDEFINED)
                                             + b"\0" * 8 + SEQ_END))
    yield "undefined length UN", part10(body(t00091002=el(0x00091002, "UN", b"", UNDEFINED)
                                             + SEQ_END))
    late = el(0x00080060, "CS", text("MR"))  # out of order: pydicom never reads it
    yield "pixel data then more", part10(body(PIXELS, late))
    yield "float pixel data", part10(body(el(0x7FE00008, "OF", b"\0" * 8), late))
    yield "double pixel data", part10(body(el(0x7FE00009, "OD", b"\0" * 8), late))
    yield "duplicate tag", part10(body(el(0x00080060, "CS", text("MR"))))
    yield "out of order", part10(body(el(0x00080070, "LO", text("ACME"))))
    yield "item delimiter at top level", part10(body(ITEM_END, el(0x00200011, "IS", b"5 ")))
    yield "unknown VR", part10(body(el(0x00290010, "XX", b"ab")))
    yield "lowercase VR", part10(body(el(0x00290010, "ob", b"ab")))
    yield "truncated value", part10(body())[:-1]
    yield "truncated long header", part10(body(el(0x00291010, "OB", b"")[:10]))
    yield "trailing bytes", part10(body(b"\0" * 5))
    yield "command group", part10(struct.pack("<HHL", 0, 0x0100, 2) + b"\0\0" + body())
    yield "no data set", part10(b"")
    yield "implicit syntax", part10(body(), syntax=ui(ImplicitVRLittleEndian))
    yield "empty syntax", part10(body(), syntax=b"")
    yield "syntax with spaces", part10(body(), syntax=text(" 1.2.840.10008.1.2.1"))
    yield "stored SOP differs", part10(body(), sop="1.2.3")
    yield "stored SOP empty", part10(body(), sop="")


HANDMADE = list(handmade())


@pytest.mark.parametrize("data", [h[1] for h in HANDMADE], ids=[h[0] for h in HANDMADE])
def test_handmade_objects(data: bytes) -> None:
    assert_same(data)


def test_handmade_cases_exercise_the_fast_path() -> None:
    taken = {name for name, data in HANDMADE if fast(data)}
    assert {"base", "DS '1.0'", "IS '  3'", "undefined sequence", "duplicate tag",
            "pixel data then more", "CS b'CT\\\\MR'"} <= taken
    assert not {"IS '1.5'", "Rows as SS", "unknown VR", "sequence without delimiter",
                "implicit VR in an item", "SH b'\\x1b$B'"} & taken


# --- pydicom's own test files and damaged copies --------------------------------------------

def _testdata() -> list[str]:
    """pydicom's test files: those it ships, pydicom-data's when installed, and any already
    downloaded (unlike get_testdata_files, this never downloads)."""
    roots = [Path(DATA_ROOT) / "test_files", Path(get_data_dir())]
    paths = {os.fspath(p) for root in roots if root.is_dir() for p in root.rglob("*")
             if p.is_file() and p.suffix != ".py"}
    for source in external_data_sources().values():
        paths.update(os.fspath(p) for p in source.get_paths("**/*", DataTypes.DATASET))
    return sorted(paths)


TESTDATA = _testdata()


def test_pydicom_test_files_are_available() -> None:
    assert len(TESTDATA) >= 150  # shipped with pydicom (more with pydicom-data installed)
    handled = [f for f in TESTDATA if fast(open(f, "rb").read())]  # noqa: SIM115
    assert len(handled) >= 100


@pytest.mark.parametrize("path", TESTDATA, ids=[os.path.basename(f) for f in TESTDATA])
def test_pydicom_test_files(path: str) -> None:
    with open(path, "rb") as f:
        assert_same(f.read())


DAMAGED = ["CT_small.dcm", "JPEG2000.dcm", "liver_1frame.dcm", "reportsi.dcm", "test-SR.dcm"]


@pytest.mark.parametrize("name", DAMAGED + ["synthetic-sequences"])
def test_damaged_copies(name: str) -> None:
    """Truncations and byte flips anywhere in the header, decided by pydicom or identically."""
    if name == "synthetic-sequences":
        data = written(with_sequences(undefined=True))
    else:
        path = next(f for f in TESTDATA if os.path.basename(f) == name)
        with open(path, "rb") as f:
            data = f.read()
    assert fast(data)
    header = min(len(data), 8000)
    rng = random.Random(name)
    for _ in range(80):
        cut = rng.randrange(132, header)
        assert_same(data[:cut])
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 1, 3))):
            damaged[rng.randrange(132, header)] = rng.randrange(256)
        assert_same(bytes(damaged))
