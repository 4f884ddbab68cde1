"""The IHE ATNA messages: each product event type gives a DICOM audit message that the
PS3.15 A.5.1 schema accepts (tests/atna_schema.py), in an RFC 5424 syslog frame."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from sidecar_core import atna
from tests import atna_schema

AT = datetime(2026, 12, 7, 9, 30, 1, 123456, tzinfo=UTC)
# every type the product records today (grep audit.record), and a few it may add
TYPES = sorted({*atna._EXACT, "review.study_claimed", "review.study_released",
                "review.finding_accepted", "review.completed", "draft.generated",
                "draft.edited", "draft.accepted", "ai_run.queued", "ai_result.dicom_written",
                "ai_result.dicom_failed", "legacy_report.completed", "handoff.recorded",
                "export.queued", "study.complete", "study.state_changed", "study.reopened",
                "facility.created", "hl7.ready", "hl7.duplicate_seen", "llm_assist.failed",
                "phi.accessed", "worklist.listed", "audit.read", "query.studies"})


def _event(event_type: str, **context: object) -> atna.Event:
    return atna.Event(type=event_type, at=AT, actor="review_gateway", facility="north",
                      accession="ACC1", study_instance_uid="1.2.826.0.1.3680043.2.1",
                      context={"username": "dr.a", "address": "10.0.0.7", "role": "radiologist",
                               "session_id": "s-1", "patient_ref": "MRN-1",
                               "query": "PatientID=MRN-1", **context})


@pytest.mark.parametrize("event_type", TYPES)
def test_every_event_type_gives_a_schema_valid_message(event_type: str) -> None:
    root = atna_schema.validate(atna.audit_message(_event(event_type), "sidecar", "HOSP"))
    event_id = root.find("EventIdentification/EventID")
    assert event_id is not None
    expected, _, _, _ = atna.classify(event_type)
    assert event_id.attrib["csd-code"] == expected[0]
    # the product's own type travels along
    assert any(c.attrib["originalText"] == event_type
               for c in root.findall("EventIdentification/EventTypeCode"))


def test_the_mapping_of_the_main_messages() -> None:
    def codes(event_type: str, **ctx: object) -> tuple[str, str, str, list[str]]:
        root = atna_schema.validate(atna.audit_message(_event(event_type, **ctx), "s"))
        ev = root.find("EventIdentification")
        assert ev is not None
        return (ev.find("EventID").attrib["csd-code"],  # type: ignore[union-attr]
                ev.attrib["EventActionCode"], ev.attrib["EventOutcomeIndicator"],
                [c.attrib["csd-code"] for c in ev.findall("EventTypeCode")])

    assert codes("auth.login_succeeded") == ("110114", "E", "0",
                                             ["110122", "auth.login_succeeded"])
    assert codes("auth.login_failed")[2] == "8"
    assert codes("auth.logout")[3][0] == "110123"
    assert codes("study.received")[:2] == ("110104", "C")
    assert codes("export.sent")[:2] == ("110102", "E")
    assert codes("review.study_opened")[:2] == ("110103", "R")
    assert codes("security.permission_denied") == ("110113", "E", "8",
                                                   ["110132", "security.permission_denied"])
    assert codes("association.rejected")[3][0] == "110126"
    assert codes("query.studies")[0] == "110112"
    assert codes("facility.created")[0] == "110100"
    # the access audit: a read, a QIDO search (with its query), a refused read
    assert codes("phi.accessed", outcome="ok")[:3] == ("110103", "R", "0")
    assert codes("phi.queried", outcome="ok")[:3] == ("110112", "E", "0")
    assert codes("phi.access_refused", outcome="refused")[:3] == ("110103", "R", "8")


def test_participants_carry_user_address_session_and_the_study() -> None:
    root = atna_schema.validate(atna.audit_message(_event("review.study_opened"), "sc", "H"))
    user = root.findall("ActiveParticipant")[0]
    assert user.attrib == {"UserID": "dr.a", "UserIsRequestor": "true",
                           "AlternativeUserID": "s-1", "NetworkAccessPointID": "10.0.0.7",
                           "NetworkAccessPointTypeCode": "2"}
    objects = root.findall("ParticipantObjectIdentification")
    assert [o.attrib["ParticipantObjectID"] for o in objects] == [
        "1.2.826.0.1.3680043.2.1", "MRN-1"]
    assert root.find("AuditSourceIdentification").attrib == {  # type: ignore[union-attr]
        "AuditSourceID": "sc", "AuditEnterpriseSiteID": "H"}


def test_the_checker_refuses_what_the_schema_refuses() -> None:
    good = atna.audit_message(_event("study.received"), "sc")
    atna_schema.validate(good)
    for broken in (good.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="3"'),
                   good.replace(b' UserIsRequestor="true"', b""),
                   good.replace(b'<ParticipantObjectName>ACC1</ParticipantObjectName>', b""),
                   good.replace(b'originalText="DICOM Instances Transferred"', b""),
                   good.replace(b"AuditSourceIdentification", b"AuditSource")):
        assert broken != good
        with pytest.raises(atna_schema.SchemaError):
            atna_schema.validate(broken)


def test_rfc5424_frame_and_octet_counting() -> None:
    msg = atna.audit_message(_event("auth.logout"), "sc")
    frame = atna.syslog_frame(msg, AT, hostname="host1")
    header = re.match(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) - \xef\xbb\xbf", frame)
    assert header is not None
    assert header.groups()[0] == b"85"  # facility 10 (authpriv), severity 5 (notice)
    assert header.groups()[1:] == (b"2026-12-07T09:30:01.123456Z", b"host1", b"sidecar",
                                   header.group(5), b"IHE+RFC-3881")
    assert frame.endswith(msg)
    counted = atna.octet_counted(frame)
    length, _, rest = counted.partition(b" ")
    assert int(length) == len(rest) == len(frame)


def test_targets() -> None:
    assert atna.Target.parse("tls://audit.hospital:6514") == atna.Target(
        "tls", "audit.hospital", 6514)
    assert atna.Target.parse("udp://127.0.0.1:514").scheme == "udp"
    for bad in ("syslog://x:1", "tcp://x", "x:514"):
        with pytest.raises(ValueError, match="SIDECAR_AUDIT_SYSLOG"):
            atna.Target.parse(bad)


def test_a_dicom_peer_is_named_by_its_ae_title_and_address() -> None:
    event = atna.Event(type="association.rejected", at=AT, actor="ingest_svc",
                       error_class="ASSOCIATION_REJECTED",
                       context={"calling_ae": "MODALITY1", "peer": "10.0.0.9:40112"})
    root = atna_schema.validate(atna.audit_message(event, "sc"))
    peer = root.findall("ActiveParticipant")[0].attrib
    assert (peer["UserID"], peer["AlternativeUserID"], peer["NetworkAccessPointID"]) == (
        "MODALITY1", "AETITLES=MODALITY1", "10.0.0.9")
    assert root.find("EventIdentification").attrib["EventOutcomeIndicator"] == "8"  # type: ignore[union-attr]


def test_sidecar_up_refuses_a_bad_repository_before_starting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar_app.runtime.supervisor import outbound_problem

    monkeypatch.setenv("SIDECAR_EGRESS_ALLOW", "")
    monkeypatch.setenv("SIDECAR_AUDIT_SYSLOG", "syslog.hospital:6514")
    assert "SIDECAR_AUDIT_SYSLOG must be tls://" in (outbound_problem() or "")
    monkeypatch.setenv("SIDECAR_AUDIT_SYSLOG", "tls://syslog.hospital:6514")
    assert outbound_problem() is None
