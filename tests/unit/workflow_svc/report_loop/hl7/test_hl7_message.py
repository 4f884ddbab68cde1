"""ORU^R01 parsing, accession order, times and the ACKs of both modes (python-hl7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from workflow_svc.report_loop.hl7.ack import Verdict, acks_for, build_ack
from workflow_svc.report_loop.hl7.message import Hl7Error, header_of, hl7_time, parse_oru

MSH = "MSH|^~\\&|RIS|NORTH|SIDECAR|SC|20240305113005||ORU^R01|C1|P|{v}|||{m15}|{m16}"


def message(*segments: str, version: str = "2.5.1", m15: str = "", m16: str = "") -> bytes:
    return "\r".join([MSH.format(v=version, m15=m15, m16=m16), *segments]).encode()


def test_accession_from_obr3_then_obr2_then_orc() -> None:
    obr3 = parse_oru(message("OBR|1|P1|F1^RIS||||||||||||||||||||||F")).reports[0]
    assert (obr3.accession, obr3.accession_field, obr3.report_reference) == ("F1", "OBR-3",
                                                                             "F1^RIS")
    obr2 = parse_oru(message("OBR|1|P1|||||||||||||||||||||||F")).reports[0]
    assert (obr2.accession, obr2.accession_field) == ("P1", "OBR-2")
    orc3 = parse_oru(message("ORC|RE|OP|OF", "OBR|1||||||||||||||||||||||||C")).reports[0]
    assert (orc3.accession, orc3.accession_field, orc3.result_status) == ("OF", "ORC-3", "C")
    orc2 = parse_oru(message("ORC|RE|OP", "OBR|1||||||||||||||||||||||||P")).reports[0]
    assert (orc2.accession, orc2.accession_field) == ("OP", "ORC-2")


def test_two_obrs_are_two_reports_and_lf_separators_are_accepted() -> None:
    raw = message("OBR|1||A1||||||||||||||||||||||F", "OBR|2||A2||||||||||||||||||||||F")
    parsed = parse_oru(raw.replace(b"\r", b"\n"))
    assert [r.accession for r in parsed.reports] == ["A1", "A2"]
    assert parsed.header.message_at == datetime(2024, 3, 5, 11, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
    ("202403051130", datetime(2024, 3, 5, 11, 30, tzinfo=UTC)),
    ("20240305113000.25+0100", datetime(2024, 3, 5, 11, 30, 0, 250000,
                                        tzinfo=timezone(timedelta(hours=1)))),
])
def test_hl7_times(value: str, expected: datetime) -> None:
    assert hl7_time(value, "OBR", 1, 22) == expected


@pytest.mark.parametrize("value", ["2024-03-05", "20241305", "yesterday"])
def test_bad_time_names_the_field(value: str) -> None:
    with pytest.raises(Hl7Error) as err:
        hl7_time(value, "OBR", 2, 7)
    assert (err.value.ack, err.value.location, err.value.condition[0]) == ("AE", "OBR-7", "102")


def test_original_mode_nak_has_err_for_the_version() -> None:
    err = Hl7Error("AE", "OBR", 1, 25, ("103", "Table value not found"), "OBR-25 bad")
    old = build_ack(header_of(message(version="2.3").decode()), "AE", "bad", err).decode()
    assert "ACK^R01|" in old and "\rERR|OBR^1^25^^103&Table value not found&HL70357" in old
    new = build_ack(header_of(message().decode()), "AE", "bad", err).decode()
    assert "ACK^R01^ACK" in new and "\rERR||OBR^1^25|103^Table value not found^HL70357|E" in new
    assert "\rMSA|AE|C1|bad" in new


@pytest.mark.parametrize(("m15", "m16", "code", "expected"), [
    ("AL", "AL", "AA", ["CA", "AA"]), ("AL", "NE", "AA", ["CA"]), ("NE", "AL", "AA", ["AA"]),
    ("ER", "ER", "AA", []), ("ER", "ER", "AE", ["AE"]), ("SU", "SU", "AA", ["CA", "AA"]),
    ("AL", "AL", "AR", ["CR"]),
])
def test_enhanced_mode(m15: str, m16: str, code: str, expected: list[str]) -> None:
    header = header_of(message(m15=m15, m16=m16).decode())
    acks = acks_for(header, Verdict(code, "x"))
    assert [a.decode().split("\rMSA|")[1].split("|")[0] for a in acks] == expected
    assert all("|NE|NE" in a.decode().split("\r")[0] for a in acks)  # ACKs are not ACKed


def test_text_is_escaped_in_the_ack() -> None:
    ack = build_ack(header_of(message().decode()), "AE", "a|b^c&d~e\\f").decode()
    assert "MSA|AE|C1|a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f" in ack
