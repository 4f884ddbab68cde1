"""Patient and study attributes read at ingest: the fast header reader agrees with pydicom."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from sidecar_core.dicom import parse
from sidecar_core.dicom.parse import _parse_with_pydicom, parse_instance
from tests.helpers import ct_slice, to_bytes

LIMIT = 1 << 30

# (Specific Character Set, PatientName, expected DICOM JSON PN value, fast path taken)
NAMES = [
    ("", "Doe^John", {"Alphabetic": "Doe^John"}, True),
    ("ISO_IR 100", "Müller^Jürgen", {"Alphabetic": "Müller^Jürgen"}, True),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東=",
     {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}, True),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう",
     {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
      "Phonetic": "やまだ^たろう"}, False),
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동",
     {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}, False),
    ("ISO_IR 144", "Люкceмбypг", {"Alphabetic": "Люкceмбypг"}, True),
    ("", "A\\B^C", [{"Alphabetic": "A"}, {"Alphabetic": "B^C"}], True),
    ("", "Doe^John=", {"Alphabetic": "Doe^John"}, True),
]


def _object(charset: str | list[str], name: str) -> Dataset:
    ds = ct_slice(accession="ACC-9")
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID, ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "P-1", "19700102", "F", "055Y"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.StudyDate, ds.StudyTime, ds.StudyDescription = "20240301", "101500", "CT Chest"
    return ds


@pytest.mark.parametrize(("charset", "name", "expected", "fast"), NAMES,
                         ids=[f"{n[0]}-{n[1][:6]}" for n in NAMES])
def test_patient_name_in_every_character_set(charset: str | list[str], name: str,
                                             expected: object, fast: bool) -> None:
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    data = to_bytes(_object(charset, name))
    took_fast = True
    try:
        parse._FAST_READER.read(data)
    except Exception:
        took_fast = False
    assert took_fast == fast
    got = parse_instance(data, LIMIT).study_attributes
    assert got == _parse_with_pydicom(data, LIMIT).study_attributes
    assert got["PatientName"] == expected
    assert {k: got[k] for k in got if k != "PatientName"} == {
        "PatientID": "P-1", "PatientBirthDate": "19700102", "PatientSex": "F",
        "PatientAge": "055Y", "ReferringPhysicianName": {"Alphabetic": "Ref^Doc"},
        "StudyDate": "20240301", "StudyTime": "101500", "StudyDescription": "CT Chest",
        "BodyPartExamined": "CHEST", "AccessionNumber": "ACC-9"}


def test_empty_values_are_left_out() -> None:
    ds = _object("", "")
    ds.PatientSex = ""
    data = to_bytes(ds)
    got = parse_instance(data, LIMIT).study_attributes
    assert "PatientName" not in got and "PatientSex" not in got
    assert got == _parse_with_pydicom(data, LIMIT).study_attributes


def test_the_reason_for_the_request_is_kept_from_the_request_attributes_sequence() -> None:
    ds = _object("", "Doe^John")
    item = Dataset()
    item.ReasonForTheRequestedProcedure = "cough for six weeks"
    ds.RequestAttributesSequence = [item]
    ds.RequestedProcedureDescription = "CT chest with contrast"
    ds.OtherPatientIDs = ["OLD-1", "OLD-2"]
    got = parse_instance(to_bytes(ds), LIMIT).study_attributes
    assert got["ReasonForTheRequestedProcedure"] == "cough for six weeks"
    assert got["RequestedProcedureDescription"] == "CT chest with contrast"
    assert got["OtherPatientIDs"] == ["OLD-1", "OLD-2"]
    coded = Dataset()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R05", "I10", "Cough"
    coded.ReasonForRequestedProcedureCodeSequence = [code]
    ds.RequestAttributesSequence = [coded]
    assert parse_instance(to_bytes(ds), LIMIT).study_attributes[
        "ReasonForTheRequestedProcedure"] == "Cough"
    del ds.RequestAttributesSequence
    ds.ReasonForTheRequestedProcedure = "top level reason"
    fast = parse_instance(to_bytes(ds), LIMIT).study_attributes  # the fast reader reads it
    assert fast["ReasonForTheRequestedProcedure"] == "top level reason"
    assert fast == _parse_with_pydicom(to_bytes(ds), LIMIT).study_attributes
