"""Parses and validates one received DICOM object; rejections carry an UPPER_SNAKE reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.valuerep import PersonName

from sidecar_core.dicom.header import HeaderReader, settings_supported
from sidecar_core.dicom.uids import uid_problem

# Attributes copied into the metadata index (keywords, DICOM literal values).
INDEX_KEYWORDS = (
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "ImageType",
    "ImageLaterality",
    "Laterality",
    "ViewPosition",
    "PhotometricInterpretation",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "AcquisitionNumber",
    "FrameOfReferenceUID",
)


# Patient and study attributes kept per study (`studies.dicom_attributes`, docs/readme/wado.md);
# the study's first instance to carry a value sets it.
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "BodyPartExamined",
    "AccessionNumber",
    # the request (LLM context, docs/report-loop.md) and what de-identification must remove
    "ReasonForTheRequestedProcedure",
    "RequestedProcedureDescription",
    "OtherPatientIDs",
    "OtherPatientNames",
    "InstitutionName",
)
# The Request Attributes Sequence carries the reason in most modality worklists; an object
# with one is read by pydicom (the fast reader reads top-level values only).
_REQUEST_ATTRIBUTES = b"\x40\x00\x75\x02SQ"

_INDEX_TAGS = tuple((k, Tag(k)) for k in INDEX_KEYWORDS)
_STUDY_TAGS = tuple((k, Tag(k)) for k in STUDY_KEYWORDS)


class Rejected(Exception):
    """The object cannot be accepted; `reason` is the ErrorInfo/result reason."""

    def __init__(self, reason: str, message: str, **ids: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.ids = ids


@dataclass
class ParsedInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    accession: str
    attributes: dict[str, Any] = field(default_factory=dict)
    study_attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return str(self.attributes.get("Modality", ""))


def read_header(data: bytes) -> Dataset:
    """Reads the dataset without pixel data; raises Rejected(NOT_DICOM) for anything else."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        try:
            return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        except Exception as exc:
            raise Rejected("NOT_DICOM", f"unreadable DICOM file: {exc}") from exc
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True)
        # A forced read of arbitrary bytes yields garbage tags; require the SOP identity.
        if "SOPClassUID" not in ds and "StudyInstanceUID" not in ds:
            raise InvalidDicomError("no SOP Class UID or Study Instance UID found")
        return ds
    except Exception as exc:
        raise Rejected(
            "NOT_DICOM",
            f"not a DICOM object: no 'DICM' prefix and no readable dataset ({type(exc).__name__})",
        ) from exc


_IDENTITY_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "AccessionNumber",
)
_FAST_READER = HeaderReader(dict.fromkeys(_IDENTITY_KEYWORDS + INDEX_KEYWORDS + STUDY_KEYWORDS))


def parse_instance(data: bytes, max_bytes: int) -> ParsedInstance:
    """Validates identity and UIDs of a received object and indexes it (docs/architecture.md,
    "Identity and idempotency").

    The common case (explicit VR little endian Part-10 objects, under the service's pydicom
    settings) is read by `header.HeaderReader` straight from the bytes; anything it does not
    handle is read by pydicom (`_parse_with_pydicom`), with the same results and rejections.
    """
    _check_size(data, max_bytes)
    if settings_supported() and _REQUEST_ATTRIBUTES not in data:
        try:
            values, meta = _FAST_READER.read(data)
        except Exception:  # Unsupported, or anything unexpected: pydicom decides
            pass
        else:
            attributes = {k: values[k] for k in INDEX_KEYWORDS if k in values}
            study = {k: v for k in STUDY_KEYWORDS if (v := values.get(k)) not in (None, "")}
            return _identify(values.get, meta.get, lambda: (attributes, study))
    return _parse_with_pydicom(data, max_bytes)


def _parse_with_pydicom(data: bytes, max_bytes: int) -> ParsedInstance:
    """The reference implementation: pydicom reads the whole header without pixel data."""
    _check_size(data, max_bytes)
    ds = read_header(data)
    meta = getattr(ds, "file_meta", None)
    return _identify(ds.get, meta.get if meta is not None else None,
                     lambda: (_pydicom_attributes(ds, _INDEX_TAGS),
                              {**_request_reason(ds),
                               **_study_attributes(_pydicom_attributes(ds, _STUDY_TAGS))}))


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise Rejected(
            "OBJECT_TOO_LARGE", f"object is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    if not data:
        raise Rejected("NOT_DICOM", "empty object")


# Looks a value up by keyword, with an optional default (Dataset.get or dict.get).
_Getter = Callable[..., Any]


def _identify(
    get: _Getter, meta_get: _Getter | None,
    attributes: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
) -> ParsedInstance:
    """Checks the identity of a read object; `get` and `meta_get` look values up by keyword
    in the data set and the file meta group as pydicom presents them."""
    ids: dict[str, str] = {}
    study = _uid(get, "StudyInstanceUID", "MISSING_STUDY_INSTANCE_UID", ids)
    ids["study_instance_uid"] = study
    series = _uid(get, "SeriesInstanceUID", "MISSING_SERIES_INSTANCE_UID", ids)
    ids["series_instance_uid"] = series
    sop = _uid(get, "SOPInstanceUID", "MISSING_SOP_INSTANCE_UID", ids)
    ids["sop_instance_uid"] = sop
    sop_class = _uid(get, "SOPClassUID", "MISSING_SOP_CLASS_UID", ids)
    stored_sop = meta_get("MediaStorageSOPInstanceUID") if meta_get is not None else None
    if stored_sop is not None and str(stored_sop) != sop:
        raise Rejected(
            "SOP_INSTANCE_MISMATCH",
            f"MediaStorageSOPInstanceUID {stored_sop} differs from SOPInstanceUID {sop}",
            **ids,
        )
    stored_class = meta_get("MediaStorageSOPClassUID") if meta_get is not None else None
    if stored_class is not None and str(stored_class).strip("\x00 ") != sop_class:
        # Over DIMSE the file meta carries the C-STORE request's Affected SOP Class UID
        raise Rejected(
            "SOP_CLASS_MISMATCH",
            f"SOPClassUID {sop_class} differs from the SOP class it was sent as "
            f"({str(stored_class).strip()})",
            **ids,
        )
    tsuid = str(meta_get("TransferSyntaxUID", "")) if meta_get is not None else ""
    accession = str(get("AccessionNumber", "") or "").strip()
    if len(accession) > 64:
        raise Rejected(
            "INVALID_ACCESSION",
            f"AccessionNumber is {len(accession)} characters "
            "(at most 16 by the standard, 64 accepted)",
            **ids,
        )
    return ParsedInstance(study, series, sop, sop_class, tsuid, accession, *attributes())


def _uid(get: _Getter, keyword: str, missing_reason: str, ids: dict[str, str]) -> str:
    value = get(keyword)
    if value is None or str(value).strip() == "":
        raise Rejected(missing_reason, f"{keyword} is missing or empty", **ids)
    text = str(value).strip("\x00 ")
    problem = uid_problem(text)
    if problem:
        raise Rejected("INVALID_UID", f"{keyword} {text[:80]!r} {problem}", **ids)
    return text


def _pydicom_attributes(ds: Dataset, tags: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    attributes = {}
    for keyword, tag in tags:  # one lookup per attribute, by tag
        element = ds.get(tag)
        if element is not None:
            attributes[keyword] = _json_value(element.value)
    return attributes


def _request_reason(ds: Dataset) -> dict[str, Any]:
    """ReasonForTheRequestedProcedure from the first Request Attributes item that has one (its
    text, else its code's meaning); a non-empty top-level value wins."""
    try:
        items = ds.get("RequestAttributesSequence") or []
        for item in items:
            reason = str(item.get("ReasonForTheRequestedProcedure", "") or "").strip()
            codes = item.get("ReasonForRequestedProcedureCodeSequence") or []
            if not reason and codes:
                reason = str(codes[0].get("CodeMeaning", "") or "").strip()
            if reason:
                return {"ReasonForTheRequestedProcedure": reason[:1024]}
    except Exception:  # a malformed request item costs the reason, never the object
        return {}
    return {}


def _study_attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


def person_name_json(name: PersonName) -> dict[str, str]:
    """A decoded PersonName as a DICOM JSON PN value: its non-empty component groups."""
    groups = (("Alphabetic", name.alphabetic), ("Ideographic", name.ideographic),
              ("Phonetic", name.phonetic))
    return {key: value for key, value in groups if value}


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, PersonName):
        return person_name_json(value) or None
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, int | float | str):
        if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.IS):
            return float(value) if isinstance(value, pydicom.valuerep.DSfloat) else int(value)
        return value
    if isinstance(value, bytes):
        return None
    return str(value)
