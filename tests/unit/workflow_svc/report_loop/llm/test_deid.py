"""The de-identification profile: per-study date shift, age bands, free-text scrubbing."""

from __future__ import annotations

from datetime import date

from workflow_svc.report_loop.llm.deid import Deidentifier, age_band, name_parts


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
    for gone in ("Jane", "DOE", "MRN123456", "ACC-9", "2024", "1.2.840", "7946", "example.org",
                 "1234567"):
        assert gone not in out, out
    assert "nodule 6 mm" in out


def test_age_bands() -> None:
    assert age_band("064Y", None, None) == "64"
    assert age_band("095Y", None, None) == "90+"
    assert age_band("", date(1960, 6, 1), date(2024, 3, 5)) == "63"
    assert age_band("", None, date(2024, 3, 5)) == ""
