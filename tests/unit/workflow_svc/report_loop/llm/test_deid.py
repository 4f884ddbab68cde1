"""The de-identification profile: per-study date shift, age bands, free-text scrubbing."""

from __future__ import annotations

from datetime import date

from workflow_svc.report_loop.llm.deid import Deidentifier, age_band, name_parts, sex


def test_date_shift_is_fixed_per_study_and_differs_between_studies() -> None:
    a, b = Deidentifier("study-a"), Deidentifier("study-b")
    assert -365 <= a.shift_days <= -1 and a.shift_days == Deidentifier("study-a").shift_days
    assert a.shift_days != b.shift_days
    assert a.date(date(2024, 3, 5)) < "2024-03-05"


def test_free_text_scrubbed() -> None:
    d = Deidentifier("s", [*name_parts("Doe^Jane"), "MRN123456", "ACC-9"])
    text = ("Jane DOE (MRN123456, ACC-9) seen 05/03/2024 and 2024-03-05; uid 1.2.840.1.2.3; "
            "call +44 20 7946 0958 or jd@example.org; nodule 6 mm, ref 1234567")
    out = d.text(text)
    for gone in ("Jane", "DOE", "MRN123456", "ACC-9", "05/03/2024", "2024-03-05", "1.2.840",
                 "7946", "example.org", "1234567"):
        assert gone not in out, out
    assert "nodule 6 mm" in out
    assert d.date(date(2024, 3, 5)) in out  # the unambiguous date, shifted


def test_age_bands() -> None:
    assert age_band("064Y", None, None) == "64"
    assert age_band("095Y", None, None) == "90+"
    assert age_band("", date(1960, 6, 1), date(2024, 3, 5)) == "63"
    assert age_band("", None, date(2024, 3, 5)) == ""


# A PN as ingest stores it (studies.dicom_attributes): every group, accents, other scripts.
STORED = {"PatientName": {"Alphabetic": "Müller-Lüdenscheidt^Jürgen^Øle^Dr",
                          "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
          "OtherPatientNames": [{"Alphabetic": "Smithers^Wayland"}],
          "PatientID": "PID-4711", "OtherPatientIDs": ["ALT99X"], "AccessionNumber": "ACC-9021",
          "ReferringPhysicianName": {"Alphabetic": "Okafor^Chiamaka"},
          "InstitutionName": "Saint Elsewhere Hospital"}


def test_every_name_component_and_group_is_removed_whatever_case_and_accents() -> None:
    d = Deidentifier.for_study("s", STORED)
    text = ("CT follow-up MULLER-LUDENSCHEIDT jurgen ole Lüdenscheidt; 山田太郎 (やまだ たろう); "
            "aka wayland smithers; IDs pid-4711 alt99x acc-9021; referred by Dr OKAFOR "
            "Chiamaka, Saint Elsewhere Hospital")
    out = d.text(text)
    for gone in ("ULLER", "udenscheidt", "urgen", "ole ", "山田", "太郎", "やまだ", "たろう",
                 "wayland", "smithers", "4711", "alt99x", "9021", "OKAFOR", "Chiamaka",
                 "Elsewhere"):
        assert gone.lower() not in out.lower(), out
    assert out.startswith("CT follow-up ") and "Dr [REMOVED]" in out  # the prefix stays


def test_names_match_whole_words_only_and_keep_clinical_text() -> None:
    d = Deidentifier.for_study("s", {"PatientName": {"Alphabetic": "Lung^Al"}})
    assert d.text("Lungs clear; nodule in the lingula, 6.5 x 4.2 mm; Lung Al") == (
        "Lungs clear; nodule in the lingula, 6.5 x 4.2 mm; [REMOVED] [REMOVED]")


def test_phone_numbers_emails_and_dates_in_every_common_form() -> None:
    d = Deidentifier("s")
    out = d.text("Call (030) 1234-5678, 555.123.4567 or +1 617 555 0100; write to a.b@c.example."
                 " Seen 5 March 2024, March 5, 2024, 20240305, 5.3.24 and in Mar 2024."
                 " Series 3 image 45, 12 mm.")
    for gone in ("1234-5678", "555.123", "617", "a.b@", "March", "20240305", "5.3.24",
                 "Mar 2024"):
        assert gone not in out, out
    assert out.count(d.date(date(2024, 3, 5))) == 3
    assert out.endswith("Series 3 image 45, 12 mm.")


def test_only_allow_listed_sex_values_pass() -> None:
    assert [sex(v) for v in ("F", "m ", "O", "Jane", None)] == ["F", "M", "O", "", ""]


def test_placeholders_in_the_input_cannot_break_the_scrubber() -> None:
    assert Deidentifier("s").text("x \ue0007\ue001 y") == "x 7 y"
