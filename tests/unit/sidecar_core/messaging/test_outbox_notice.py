"""The relays' NOTIFY names the subjects a transaction queued; only the relays they concern wake."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sidecar_core.messaging.outbox import OutboxRelay, notice
from sidecar_core.messaging.subjects import Topology

TOPOLOGY = Topology()
AUDIT = TOPOLOGY.audit_subject("legacy_report.completed")
HANDOFF = TOPOLOGY.subject("job.v1.handoff")
RECEIVED = TOPOLOGY.subject("study.v1.received")


def relay(user: str | None) -> OutboxRelay:
    bus: Any = SimpleNamespace(topology=TOPOLOGY)
    if user is None:
        return OutboxRelay(None, bus)  # type: ignore[arg-type]
    return OutboxRelay.of_user(None, bus, user)  # type: ignore[arg-type]


def test_the_notice_is_the_distinct_subjects_in_order() -> None:
    assert notice([HANDOFF, AUDIT, HANDOFF, AUDIT]) == " ".join(sorted({HANDOFF, AUDIT}))


def test_a_notice_too_long_for_postgresql_names_nothing() -> None:
    many = [TOPOLOGY.audit_subject(f"event_{i:04d}") for i in range(400)]
    assert len(" ".join(many)) > 8000
    assert notice(many) == ""


def test_a_subject_wakes_only_the_relay_that_may_publish_it() -> None:
    payload = notice([AUDIT, TOPOLOGY.audit_subject("study.state_changed"), HANDOFF])
    assert relay("workflow").wants(payload)
    assert not relay("ingest").wants(payload)
    assert not relay("preprocess").wants(payload)
    assert not relay("normalizer").wants(payload)
    assert relay("ingest").wants(notice([RECEIVED, AUDIT]))
    assert not relay("workflow").wants(notice([RECEIVED]))


def test_audit_events_alone_wake_the_audit_relay_only() -> None:
    payload = notice([AUDIT])
    assert relay("workflow").wants(payload)
    for user in ("ingest", "preprocess", "normalizer"):
        assert not relay(user).wants(payload)


def test_a_payload_that_names_nothing_and_an_unrestricted_relay_always_wake() -> None:
    for user in ("workflow", "ingest", "preprocess", "normalizer"):
        assert relay(user).wants("")
    assert relay(None).wants(notice([RECEIVED]))
