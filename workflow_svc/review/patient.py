"""What the worklist shows of the patient, from the indexed DICOM attributes (any character set)."""

from __future__ import annotations

from typing import Any

from protos.sidecar.workflow.v1 import review_service_pb2 as rpb


def person_name(value: Any) -> tuple[str, str, str]:
    """(alphabetic, ideographic, phonetic) groups of a PN value: a decoded string with `=`
    between the groups (pydicom), or DICOM JSON's {"Alphabetic", "Ideographic", "Phonetic"}."""
    if value is None:
        return "", "", ""
    if isinstance(value, list):
        return person_name(value[0]) if value else ("", "", "")
    if isinstance(value, dict):
        return (str(value.get("Alphabetic", "")), str(value.get("Ideographic", "")),
                str(value.get("Phonetic", "")))
    groups = (str(value).split("=") + ["", ""])[:3]
    return groups[0], groups[1], groups[2]


def _dicom_date(value: Any) -> str:
    """YYYYMMDD (or YYYY-MM-DD) → YYYY-MM-DD; anything else → empty."""
    text = str(value or "").strip().replace("-", "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return ""


def study_date(attributes: dict[str, Any]) -> str:
    return _dicom_date(attributes.get("StudyDate"))


def patient_pb(attributes: dict[str, Any]) -> rpb.Patient:
    name, ideographic, phonetic = person_name(attributes.get("PatientName"))
    return rpb.Patient(
        name=name, name_ideographic=ideographic, name_phonetic=phonetic,
        id=str(attributes.get("PatientID") or ""), sex=str(attributes.get("PatientSex") or ""),
        birth_date=_dicom_date(attributes.get("PatientBirthDate")),
        age=str(attributes.get("PatientAge") or ""))
