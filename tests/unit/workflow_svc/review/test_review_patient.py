"""Worklist patient fields from indexed attributes: PN component groups, dates, missing values."""

from __future__ import annotations

import pytest

from workflow_svc.review.patient import patient_pb, person_name, study_date


@pytest.mark.parametrize(("value", "groups"), [
    ({"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
     ("Yamada^Tarou", "山田^太郎", "やまだ^たろう")),
    ({"Ideographic": "王^小東"}, ("", "王^小東", "")),  # ideographic only (ISO 2022 IR 87)
    ("Hong^Gildong=洪^吉洞=홍^길동", ("Hong^Gildong", "洪^吉洞", "홍^길동")),  # pydicom's str
    ([{"Alphabetic": "First^One"}, {"Alphabetic": "Second^Two"}], ("First^One", "", "")),
    ("Müller^Jürgen", ("Müller^Jürgen", "", "")),  # ISO_IR 192 / 100
    (None, ("", "", "")), ([], ("", "", "")),
])
def test_person_name_groups(value: object, groups: tuple[str, str, str]) -> None:
    assert person_name(value) == groups


def test_patient_fields_and_dates() -> None:
    patient = patient_pb({"PatientName": {"Alphabetic": "<img src=x onerror=alert(1)>"},
                          "PatientID": "P1", "PatientSex": "F", "PatientAge": "055Y",
                          "PatientBirthDate": "19700102"})
    assert (patient.name, patient.id, patient.sex, patient.age, patient.birth_date) == (
        "<img src=x onerror=alert(1)>", "P1", "F", "055Y", "1970-01-02")
    assert patient_pb({}).birth_date == ""
    assert patient_pb({"PatientBirthDate": "1970"}).birth_date == ""
    assert study_date({"StudyDate": "20240305"}) == "2024-03-05"
    assert study_date({"StudyDate": "2024-03-05"}) == "2024-03-05"
    assert study_date({"StudyDate": "garbage!"}) == "" and study_date({}) == ""
